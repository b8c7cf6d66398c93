"""Figures of the patch-scorer evaluation: ``reports/scorer/summary.json``, ``REPORT.md`` and plots.

    .venv/bin/python -m workers.evaluation.patch_report --runs runs/patch --out reports/scorer

Folds are ``<fold>:<held-out patient>`` (default ``A:ircadb-07 B:ircadb-17``); each fold's detectors are
read from ``runs/patch/<fold>-<detector>/scorer.pt`` (``workers.training.patch_training``). Every
figure comes from the held-out patient of its fold; pooled figures pool the pairs of all folds.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics import auroc, auroc_of, bootstrap_ci
from models.patch_gan.grid import GridConfig
from workers.evaluation.cases import EvalConfig
from workers.evaluation.patch_eval import detectors_for, evaluate_fold, load_host, make_tests, patchcore_detector
from workers.evaluation.patch_summary import GANS, write_report
from workers.inference.patch_scorer import ScoringConfig
from workers.training.patch_calibration import conformal_threshold

log = logging.getLogger(__name__)
ANOMALY_TYPES = ("lesion", "blob", "warp", "metal")
RULE = "deviation"
FUSED = GANS  # the learned detectors each fused with the training-free rule


def fusion_name(detector: str) -> str:
    return f"{detector}+{RULE}"


def add_fusion(folds: dict[str, dict]) -> None:
    """Each learned detector of ``FUSED`` + the deviation rule (``fanogan+deviation``, ``inpaint+deviation``):
    each slice score (and heat) divided by the median normal slice score of the *other* folds' held-out
    patients (no look at this fold's patient), then summed. A fold without both detectors gets no fusion."""
    for name, fold in folds.items():
        dets = fold["detectors"]
        for learned in (d for d in FUSED if d in dets and RULE in dets):
            scale = {}
            for d in (learned, RULE):
                other = [
                    np.asarray(f["detectors"][d]["base_scores"])[f["normal_slices"]]
                    for n, f in folds.items()
                    if n != name and d in f["detectors"]
                ]
                pool = np.concatenate(other) if other else np.asarray(dets[d]["base_scores"])[fold["normal_slices"]]
                scale[d] = float(np.median(pool)) or 1.0
            g, v = dets[learned], dets[RULE]
            base = np.asarray(g["base_scores"]) / scale[learned] + np.asarray(v["base_scores"]) / scale[RULE]
            fused: dict[str, Any] = {"base_scores": base.tolist(), "tests": {}}
            for t in g["tests"]:
                a, b = g["tests"][t], v["tests"][t]
                fused["tests"][t] = {**a}
                for key in ("modified", "base", "pixel_heat", "pixel_base_heat"):
                    fused["tests"][t][key] = np.asarray(a[key]) / scale[learned] + np.asarray(b[key]) / scale[RULE]
            dets[fusion_name(learned)] = fused


def pair_auroc(test: dict, subset: np.ndarray | None = None) -> float | None:
    mod, base = np.asarray(test["modified"]), np.asarray(test["base"])
    if subset is not None:
        mod, base = mod[subset], base[subset]
    return auroc_of(base, mod)


def _pair_auroc_at(p: dict[str, np.ndarray], i: np.ndarray) -> float | None:
    return auroc_of(p["base"][i], p["modified"][i])


def pooled(folds: dict[str, dict], det: str, test: str) -> dict[str, np.ndarray] | None:
    parts = [
        f["detectors"][det]["tests"][test]
        for f in folds.values()
        if det in f["detectors"] and test in f["detectors"][det]["tests"]
    ]
    if not parts:
        return None
    keys = ("modified", "base", "bins", "groups")
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in keys}


def pixel_auroc(folds: dict[str, dict], det: str) -> float | None:
    heats, pos = [], []
    for f in folds.values():
        t = f["detectors"].get(det, {}).get("tests", {}).get("lesion")
        if t is not None:
            heats.append(np.asarray(t["pixel_heat"]))
            pos.append(np.asarray(t["pixel_positive"]))
    return auroc(np.concatenate(heats), np.concatenate(pos)) if heats else None


def detector_metrics(folds: dict[str, dict], det: str) -> dict[str, Any]:
    out: dict[str, Any] = {"pair_auroc": {}, "pair_auroc_ci95": {}, "per_fold": {}}
    for t in ANOMALY_TYPES:
        p = pooled(folds, det, t)
        if p is None:
            continue
        out["pair_auroc"][t] = pair_auroc(p)
        n = len(p["modified"])
        out["pair_auroc_ci95"][t] = bootstrap_ci(functools.partial(_pair_auroc_at, p), p["groups"], 500)
        if t == "lesion":
            big = p["bins"] == ">=15"
            out["lesion_pairs_ge15mm"] = int(big.sum())
            out["lesion_pair_auroc_ge15mm"] = pair_auroc(p, big) if big.any() else None
            out["lesion_pairs"] = n
    for name, f in folds.items():
        rec = f["detectors"].get(det)
        if rec:
            out["per_fold"][name] = {"host": f["host"], **{t: pair_auroc(rec["tests"][t]) for t in rec["tests"]}}
    values = [out["pair_auroc"].get(t) for t in ANOMALY_TYPES]
    out["mean_auroc_all_anomaly_types"] = float(np.mean(values)) if all(v is not None for v in values) else None
    out["pixel_auroc_liver"] = pixel_auroc(folds, det)
    return out


def unseen_fpr(folds: dict[str, dict], det: str, alpha: float) -> dict[str, Any]:
    """Per fold: threshold from the other folds' held-out normal slices (each under its own fold's model)."""
    per = {}
    for name, f in folds.items():
        if det not in f["detectors"]:
            continue
        calib = [
            np.asarray(g["detectors"][det]["base_scores"])[g["normal_slices"]]
            for n, g in folds.items()
            if n != name and det in g["detectors"]
        ]
        if not calib:
            continue
        t = conformal_threshold(np.concatenate(calib), alpha)
        own = np.asarray(f["detectors"][det]["base_scores"])[f["normal_slices"]]
        per[f["host"]] = {
            "threshold": t,
            "fpr": float(np.mean(own > t)),
            "n_normal": int(len(own)),
            "n_calibration": int(sum(map(len, calib))),
        }
    fprs = [v["fpr"] for v in per.values()]
    return {"target": alpha, "per_patient": per, "mean": float(np.mean(fprs)) if fprs else None}


def paired_difference_ci(folds: dict[str, dict], a: str, b: str, n_boot: int = 1000) -> dict[str, Any] | None:
    """AUROC(a) - AUROC(b) on the same lesion pairs (the folds where both were trained), resampling whole donor
    tumours."""
    both = {k: f for k, f in folds.items() if a in f["detectors"] and b in f["detectors"]}
    pa, pb = pooled(both, a, "lesion"), pooled(both, b, "lesion")
    if pa is None or pb is None or len(pa["modified"]) != len(pb["modified"]):
        return None

    def diff(i: np.ndarray) -> float | None:
        x, y = auroc_of(pa["base"][i], pa["modified"][i]), auroc_of(pb["base"][i], pb["modified"][i])
        return None if x is None or y is None else x - y

    point = diff(np.arange(len(pa["modified"])))
    ci = bootstrap_ci(diff, pa["groups"], n_boot)
    return {
        "difference": point,
        "ci95": ci,
        "tumours": int(len(np.unique(pa["groups"]))),
        "pairs": int(len(pa["modified"])),
        "folds": sorted(both),
    }


def shipped_fpr(path: Path, patients: list[str], data_dir: Path) -> dict[str, Any]:
    """The committed, calibrated scorer on normal patients it neither trained nor was calibrated on."""
    from workers.inference.checkpoint import read_checkpoint
    from workers.training.patch_calibration import normal_slice_scores

    meta = read_checkpoint(path)["metadata"]
    threshold = meta["calibration"]["threshold"]
    scores = normal_slice_scores(path, patients, data_dir)
    per = {k: {"fpr": float(np.mean(v > threshold)), "n_normal": int(len(v))} for k, v in scores.items()}
    return {"file": path.name, "threshold": threshold, "calibrated_on": sorted(meta["calibration"]["patients"]),
            "trained_on": meta["config"]["train"], "per_patient": per}  # fmt: skip


def committed_fpr(args: argparse.Namespace, data_dir: Path) -> list[dict[str, Any]]:
    patients = [f.split(":")[1] for f in args.folds] + ["ircadb-01"]
    return [shipped_fpr(Path(p), patients, data_dir) for p in args.shipped]


def run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    data_dir, grid_config, cfg = Path(args.data_dir), GridConfig(), EvalConfig()
    folds: dict[str, dict] = {}
    for spec in args.folds:
        fold, host_name = spec.split(":")
        host = load_host(data_dir, host_name, grid_config)
        tests = make_tests(host, data_dir, cfg, args.max_pairs, args.synthetic_slices)
        dets = detectors_for(fold, args.runs, args.detectors, ScoringConfig())
        if args.patchcore_segmenter:
            segmenter, levels = Path(args.patchcore_segmenter), tuple(args.patchcore_levels)
            dets.append(patchcore_detector(host_name, data_dir, segmenter, grid_config, levels, args.patchcore_coreset))
        folds[fold] = evaluate_fold(host, tests, dets, grid_config)
    add_fusion(folds)
    names = sorted({d for f in folds.values() for d in f["detectors"]})
    metrics = {
        d: {**detector_metrics(folds, d), "unseen_normal_fpr": unseen_fpr(folds, d, args.target_fpr)} for d in names
    }
    # each GAN against its ablation without position conditioning where both were trained (<fold>-<gan>-uncond)
    conditioning = {g: paired_difference_ci(folds, g, f"{g}-uncond") for g in FUSED}
    shipped = committed_fpr(args, data_dir)
    counts = {}
    for k, v in folds.items():
        any_detector = next(iter(v["detectors"].values()))
        counts[k] = {"host": v["host"], "tests": {t: len(x["modified"]) for t, x in any_detector["tests"].items()}}
    examples = {k: {"host": v["host"], "examples": v.get("examples", {})} for k, v in folds.items()}
    memory = {k: v["detectors"]["patchcore"]["memory"] for k, v in folds.items() if "patchcore" in v["detectors"]}
    return {"folds": counts, "detectors": metrics, "conditioning": conditioning,
            "examples": examples, "shipped": shipped, "patchcore_memory": memory,
            "eval_minutes": (time.perf_counter() - t0) / 60}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/patch"))
    p.add_argument("--out", type=Path, default=Path("reports/scorer"))
    p.add_argument("--folds", nargs="+", default=["A:ircadb-07", "B:ircadb-17"])
    p.add_argument("--detectors", nargs="+", default=["fanogan", "fanogan-uncond", "ae", "inpaint", "inpaint-uncond"])
    p.add_argument(
        "--patchcore-segmenter",
        default="models/weights/segmenter.pt",
        help="the frozen segmenter whose encoder the PatchCore baseline reads (never trained on a held-out "
        "patient); empty: no PatchCore",
    )
    p.add_argument(
        "--patchcore-levels",
        type=int,
        nargs="+",
        default=[1, 2],
        help="the encoder levels PatchCore reads (level i: stride 2^(i+1))",
    )
    p.add_argument(
        "--patchcore-coreset",
        type=float,
        default=0.1,
        help="the share of the normal feature vectors PatchCore's memory keeps (greedy k-centre coreset)",
    )
    p.add_argument("--max-pairs", type=int, default=60)
    p.add_argument("--synthetic-slices", type=int, default=30)
    p.add_argument("--target-fpr", type=float, default=0.05)
    p.add_argument(
        "--shipped",
        nargs="*",
        default=["models/weights/deviation.pt", "models/weights/patch-fanogan.pt"],
        help="the committed scorers, measured on patients they never saw",
    )
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--from-metrics", action="store_true", help="rewrite the report from --out's metrics.json")
    args = p.parse_args(argv)
    if args.from_metrics:  # the figures again, without scoring again (the example figure is kept as it was)
        result = json.loads((args.out / "metrics.json").read_text())
        result["shipped"] = committed_fpr(args, Path(args.data_dir))
        (args.out / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
        training = training_record(args.runs, args.folds[0].split(":")[0], args.detectors)
        command = "python -m workers.evaluation.patch_report --runs runs/patch --out reports/scorer"
        print(json.dumps(write_report(result, training, args.out, command), default=float)[:400])
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = {k: v for k, v in result.items() if k != "examples"}  # the example images go into a figure only
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    training = training_record(args.runs, args.folds[0].split(":")[0], args.detectors)
    command = "python -m workers.evaluation.patch_report " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(write_report(result, training, args.out, command.strip()), indent=1, default=float))


def training_record(runs: Path, fold: str, detectors: list[str]) -> dict[str, dict[str, Any]]:
    """Steps and minutes of the first fold's models, from their checkpoints' metadata."""
    from workers.inference.checkpoint import read_checkpoint

    out = {}
    for name in detectors:
        path = runs / f"{fold}-{name}" / "scorer.pt"
        if path.exists():
            meta = read_checkpoint(path)["metadata"]
            first = next(iter(meta["steps"].values()))
            out[name] = {"steps": first, "all_steps": meta["steps"], "train_minutes": meta["train_minutes"]}
    return out


if __name__ == "__main__":
    main()

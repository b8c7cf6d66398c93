"""Honest evaluation of the anomaly scorer on real CT, designed around the position trap.

``evaluate_scorer(checkpoints, data_dir, out_dir)`` scores every model on the
same inputs and writes out_dir/REPORT.md, out_dir/*.png and out_dir/metrics.json:

1. position-matched lesion test: real ircadb-01 tumours transplanted
   (``models.anomalies``) into the normal liver of ircadb-17 at the same
   distance from the lung base (``models.body_position``), each modified slice
   scored against the same slice unmodified; AUROC by lesion diameter. A second,
   smaller set puts ircadb-17 tumours into ircadb-01's held-out normal liver,
   which lies at other levels (not position-matched; the recipient is unseen);
2. MOOD-style synthetic anomalies (blob, warp, metal) in normal liver;
3. pixel AUROC of the heat-map inside the liver on ircadb-01's tumour slices;
4. slice AUROC on the MANIFEST split beside the AUROC of slice position alone;
5. false-positive rate at the calibrated threshold on held-out normal slices.

Preprocessing is ``models.transforms``: a ``SeriesView`` computes the series'
intensity shift and view centre once (from the unmodified series) and reuses
``resample_inplane`` / ``interpolate_along_z`` / ``window`` for modified slices;
at start-up it checks that it reproduces ``preprocess_series`` exactly.
Outputs are numbers and plots of numbers, except heatmaps.png, which shows
the model's view of the non-commercial CT and is git-ignored.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.metrics import auroc_of
from models.scorer import ConvAutoencoder, FAnoGAN
from models.transforms import PreprocessConfig
from workers.evaluation.cases import (  # shared with gate_eval
    SLAB,
    Case,
    Edit,
    EvalConfig,
    SeriesView,
    ViewedEdits,
    indices_of,
    load_case,
    make_lesion_edits,
    make_synthetic_edits,
    view_edits,
)
from workers.evaluation.scorer_metrics import (
    auroc_difference_ci,
    cluster_bootstrap_ci,
    fpr_metrics,
    paired_metrics,
    pixel_auroc,
    top_fraction_score,
)
from workers.evaluation.scorer_report import plot_grid, plot_profile, plot_roc, report_markdown
from workers.inference.liver_roi import roi_of, roi_valid
from workers.inference.scorer import configs_from_metadata, load_scorer, predict_slices, score_volume

log = logging.getLogger(__name__)


@dataclass
class Model:
    label: str
    path: Path
    net: FAnoGAN | ConvAutoencoder
    metadata: dict[str, Any]
    view_key: str  # which preprocessing it uses
    ablation_of: str | None = None  # label of the model whose weights it scores differently


def load_models(
    checkpoints: dict[str, Path], kappa_ablation: bool = False
) -> tuple[list[Model], dict[str, PreprocessConfig]]:
    models, configs = [], {}
    for label, path in checkpoints.items():
        net, metadata = load_scorer(Path(path))
        preprocess, _ = configs_from_metadata(metadata)
        key = json.dumps(preprocess.as_json(), sort_keys=True)
        configs[key] = preprocess
        models.append(Model(label, Path(path), net, metadata, key))
        if kappa_ablation and isinstance(net, FAnoGAN) and net.config.kappa != 0:
            models.append(image_residual_only(models[-1]))
    return models, configs


def image_residual_only(model: Model) -> Model:
    """The same f-AnoGAN scored with kappa = 0 (``<label>-k0``): the pixel residual alone, no critic-feature
    term. An ablation of the score, not of training: the weights are shared, and the threshold is
    calibrated in this evaluation because the checkpoint's belongs to the kappa it was trained with."""
    assert isinstance(model.net, FAnoGAN)
    net = copy.copy(model.net)  # shares every weight; only the score's configuration differs
    net.config = dataclasses.replace(model.net.config, kappa=0.0)
    metadata = {k: v for k, v in model.metadata.items() if k != "calibration"}
    return Model(f"{model.label}-k0", model.path, net, metadata, model.view_key, ablation_of=model.label)


@torch.no_grad()
def run_model(
    model: Model, images: torch.Tensor, positions: np.ndarray, valid: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N,), heat-maps (N, S, S)) through the serving code's ``predict_slices``."""
    pos = torch.as_tensor(np.asarray(positions, dtype=np.float32))
    pred = predict_slices(model.net, images, pos, valid, batch_size=64)
    return pred.slice_scores.numpy(), pred.heatmaps[:, 0].numpy()


def comparisons_to_make(models: list[Model]) -> list[tuple[str, str]]:
    """(a, b) label pairs: every conditioned f-AnoGAN against every model that is not one (the issue's
    two baselines) and sees the same inputs (same view, same scoring region: whole view or the liver),
    and every kappa ablation against the model it ablates."""

    def conditioned(m: Model) -> bool:
        return isinstance(m.net, FAnoGAN) and m.net.config.conditional

    def same_inputs(a: Model, b: Model) -> bool:
        return a.view_key == b.view_key and roi_of(a.metadata) == roi_of(b.metadata)

    out = [(m.label, m.ablation_of) for m in models if m.ablation_of is not None]
    for a in models:
        if conditioned(a) and a.ablation_of is None:
            out += [(a.label, b.label) for b in models
                    if not conditioned(b) and b.ablation_of is None and same_inputs(a, b)]  # fmt: skip
    return out


def paired_comparisons(
    models: list[Model], raws: dict[str, dict[str, Any]], lesion_edits: list[Edit], cfg: EvalConfig
) -> list[dict[str, Any]]:
    """``auroc_difference_ci`` on the position-matched lesion pairs, all sizes and the largest bin."""
    if not lesion_edits:
        return []
    tumours = np.array([e.info["component"] for e in lesion_edits])
    bins = np.array([e.info["bin"] for e in lesion_edits])
    top = f">={cfg.diameter_edges_mm[-1]:g}"
    out = []
    for a, b in comparisons_to_make(models):
        (base_a, mod_a), (base_b, mod_b) = raws[a]["lesion"][:2], raws[b]["lesion"][:2]
        entry: dict[str, Any] = {"a": a, "b": b}
        for name, keep in (("all", np.ones(len(bins), bool)), (top, bins == top)):
            if keep.any():
                entry[name] = auroc_difference_ci((base_a[keep], mod_a[keep]), (base_b[keep], mod_b[keep]),
                                                  tumours[keep], seed=cfg.seed)  # fmt: skip
        out.append(entry)
    return out


def training_state(model: Model) -> dict[str, Any]:
    md, cfg = model.metadata, model.metadata["config"]
    return {
        "detector": cfg.get("detector", "fanogan"),
        "conditional": cfg["model"]["conditional"],
        "base_width": cfg["model"]["base_width"],
        "gan_step": md.get("gan_step"),
        "gan_steps_planned": cfg["gan_steps"],
        "encoder_step": md.get("encoder_step"),
        "encoder_steps_planned": cfg["encoder_steps"],
        "phase": md.get("phase"),
        "checkpoint": str(model.path),
        "calibrated_in_checkpoint": "calibration" in md,
        "kappa": model.net.config.kappa if isinstance(model.net, FAnoGAN) else None,
        "ablation_of": model.ablation_of,
    }


def liver_regions(model: Model, views: dict[str, SeriesView], livers: dict[str, np.ndarray] | None) -> dict | None:
    """Per series, (Z, 1, S, S): where a liver-restricted model scores (``liver_roi``), from the
    segmenter's mask of the unmodified series; None for a model that scores the whole view."""
    roi = roi_of(model.metadata)
    if roi is None:
        return None
    if livers is None:
        raise ValueError(f"{model.label} scores inside the liver: give the segmenter it was calibrated with")
    return {n: roi_valid(roi, livers[n], v.case.hu, v.case.spacing, v.config) for n, v in views.items()}


def restricted_scores(model: Model, heat: np.ndarray, valid: torch.Tensor, region: torch.Tensor | None) -> np.ndarray:
    """The model's slice score of heat-maps computed over the whole view, taken inside ``region``: what
    the worker computes for a liver-restricted scorer (the heat-map is per pixel, so only the reduction
    changes); the heat-maps themselves stay whole for the pixel AUROC and the figures."""
    from models.scorer import reduce_map

    inside = valid if region is None else valid & region
    return reduce_map(torch.as_tensor(heat)[:, None] * inside, inside, model.net.config.top_k_fraction).numpy()


def model_metrics(
    model: Model,
    views: dict[str, SeriesView],
    tests: dict[str, ViewedEdits],
    cfg: EvalConfig,
    donor: Case,
    recipient: Case,
    livers: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, raw arrays for plots) of one model."""
    from models.scorer import calibrate_threshold

    regions = liver_regions(model, views, livers)
    raw: dict[str, Any] = {}
    full = {}
    for name, view in views.items():
        x, v = view.images(list(range(view.case.hu.shape[0])))
        scores, heat = run_model(model, x, view.case.body.normalised, v)
        region = None if regions is None else regions[name]
        if region is not None:
            scores, v = restricted_scores(model, heat, v, region), v & region
        full[name] = (scores, heat, top_fraction_score(heat, v))
    raw["full"] = full
    out: dict[str, Any] = {"training": training_state(model), "tests": {}}
    if regions is not None:
        out["region"] = roi_of(model.metadata).as_json() | {  # type: ignore[union-attr]
            "parity_vs_score_volume": score_volume_parity(model, donor, full[donor.name][0], livers)
        }
    for test, ve in tests.items():
        if not ve.edits:
            continue
        host = {e.case for e in ve.edits}
        positions = np.array([views[e.case].case.body.normalised[e.index] for e in ve.edits])
        mod, heat = run_model(model, ve.images, positions, ve.valid)
        valid = ve.valid
        if regions is not None:  # the region of the unmodified series: both sides of a pair look at one place
            region = torch.cat([regions[e.case][e.index : e.index + 1] for e in ve.edits])
            mod, valid = restricted_scores(model, heat, valid, region), valid & region
        base = np.array([full[e.case][0][e.index] for e in ve.edits])
        raw[test] = (base, mod, heat)
        entry = paired_metrics(base, mod) | {"hosts": sorted(host)}
        base_top = np.array([full[e.case][2][e.index] for e in ve.edits])
        entry["diagnostic_top1pct"] = paired_metrics(base_top, top_fraction_score(heat, valid))
        if test.startswith("lesion"):
            bins = np.array([e.info["bin"] for e in ve.edits])
            raw[f"{test}_bins"] = bins
            entry["by_diameter"] = {b: paired_metrics(base[bins == b], mod[bins == b]) for b in sorted(set(bins))}
            tumours = np.array([e.info["component"] for e in ve.edits])
            entry |= cluster_bootstrap_ci(base, mod, tumours, seed=cfg.seed)
            inside = np.stack(
                [views[e.case].mask_fraction(views[e.case].case.liver[e.index][None])[0] for e in ve.edits]
            )
            entry["pixel_auroc"] = pixel_auroc(heat, ve.region >= 0.5, (inside >= 0.5) & ve.valid[:, 0].numpy())
        out["tests"][test] = entry
    # real split on the donor, beside position alone
    d_scores, d_heat = full[donor.name][:2]
    normal, tumour = indices_of(cfg.heldout_normal), indices_of(cfg.donor_tumour)
    liver_normal = indices_of(cfg.donor_normal_liver)
    pos_mm = donor.body.position_mm
    d_top = full[donor.name][2]
    out["slice_split"] = {
        "n_normal": len(normal),
        "n_tumour": len(tumour),
        "auroc_diagnostic_top1pct": auroc_of(d_top[normal], d_top[tumour]),
        "auroc": auroc_of(d_scores[normal], d_scores[tumour]),
        "auroc_position_only": auroc_of(pos_mm[normal], pos_mm[tumour]),
        "auroc_liver_slices": auroc_of(d_scores[liver_normal], d_scores[tumour]),
        "auroc_liver_slices_position_only": auroc_of(pos_mm[liver_normal], pos_mm[tumour]),
    }
    view = views[donor.name]
    liver_f, tumour_f = view.mask_fraction(donor.liver[tumour]), view.mask_fraction(donor.tumour[tumour])
    in_view = view.images(tumour)[1][:, 0].numpy()
    out["pixel_auroc_real_tumours"] = pixel_auroc(d_heat[tumour], tumour_f >= 0.5, (liver_f >= 0.5) & in_view)
    out["pixel_counts_real_tumours"] = {
        "tumour": int(((tumour_f >= 0.5) & (liver_f >= 0.5) & in_view).sum()),
        "liver": int(((tumour_f < 0.5) & (liver_f >= 0.5) & in_view).sum()),
    }
    if regions is not None:  # slices without liver score 0 and are never judged: they would flatter the FPR
        normal = [k for k in normal if bool(regions[donor.name][k].any())]
    heldout = d_scores[normal]
    calib = model.metadata.get("calibration")
    if calib is not None:
        threshold, source = float(calib["threshold"]), "checkpoint"
    else:
        threshold, source = calibrate_threshold(torch.as_tensor(heldout), cfg.target_fpr), "this evaluation"
    out["fpr"] = fpr_metrics(heldout, threshold, source, cfg.target_fpr)
    out["fpr"]["flagged_tumour_slices"] = float(np.mean(d_scores[tumour] > threshold))
    if "lesion" in raw:
        out["fpr"]["flagged_lesion_pairs_modified"] = float(np.mean(raw["lesion"][1] > threshold))
        out["fpr"]["flagged_lesion_pairs_unmodified"] = float(np.mean(raw["lesion"][0] > threshold))
    raw["threshold"] = threshold
    return out, raw


def score_volume_parity(model: Model, donor: Case, scores: np.ndarray, livers: dict[str, np.ndarray] | None) -> float:
    """Max |difference| of this evaluation's donor scores to the worker's ``score_volume``."""
    served = score_volume(model.net, donor.hu, donor.spacing, donor.positions_mm, model.metadata,
                          liver=None if livers is None else livers[donor.name])  # fmt: skip
    return float(np.max(np.abs(served.slice_scores - scores)))


# ---------------------------------------------------------------- entry points


def build_tests(donor: Case, recipient: Case, cfg: EvalConfig, max_pairs: int) -> dict[str, list[Edit]]:
    z_r = recipient.hu.shape[0]
    rec_normal = [k for k in indices_of(cfg.recipient_normal) if SLAB <= k < z_r - SLAB]
    donor_liver = [k for k in indices_of(cfg.donor_normal_liver) if SLAB <= k < donor.hu.shape[0] - SLAB]
    return {
        "lesion": make_lesion_edits(
            donor, recipient, cfg.donor_tumour, rec_normal, cfg.position_tolerance_mm, max_pairs, cfg, "lesion"
        ),
        "lesion-unmatched": make_lesion_edits(
            recipient, donor, cfg.recipient_tumour, donor_liver, None, max(30, max_pairs // 3), cfg, "lesion-unmatched"
        ),
        **{
            f"{k}@{donor.name}": v
            for k, v in _by_kind(make_synthetic_edits(donor, donor_liver, cfg.synthetic_per_slice, cfg)).items()
        },
        **{
            f"{k}@{recipient.name}": v
            for k, v in _by_kind(make_synthetic_edits(recipient, rec_normal[::4], 2, cfg)).items()
        },
    }


def _by_kind(edits: list[Edit]) -> dict[str, list[Edit]]:
    out: dict[str, list[Edit]] = {}
    for e in edits:
        out.setdefault(e.test, []).append(e)
    return out


def evaluate_scorer(
    checkpoints: dict[str, Path],
    data_dir: Path,
    out_dir: Path,
    *,
    max_pairs: int = 240,
    config: EvalConfig | None = None,
    segmenter: Path | None = None,
    kappa_ablation: bool = False,
) -> dict:
    """Score every checkpoint on the same inputs; write REPORT.md, *.png and metrics.json to ``out_dir``."""
    t0 = time.perf_counter()
    cfg = config or EvalConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    donor, recipient = load_case(data_dir, cfg.donor), load_case(data_dir, cfg.recipient)
    models, preprocess = load_models(checkpoints, kappa_ablation)
    views = {key: {c.name: SeriesView(c, p) for c in (donor, recipient)} for key, p in preprocess.items()}
    parity = max(
        v.check_parity([0, 40, 80, c.hu.shape[0] - 1])
        for vs in views.values()
        for c, v in zip((donor, recipient), vs.values(), strict=True)
    )
    if parity > 1e-4:
        raise AssertionError(f"SeriesView differs from preprocess_series by {parity}")
    livers = None
    if segmenter is not None:  # the liver as the worker sees it: the segmenter's prediction, no ground truth
        from workers.inference.segmenter import load_segmenter, segment_mask

        net, _ = load_segmenter(segmenter)
        livers = {c.name: segment_mask(net, c.hu, c.spacing, c.positions_mm) for c in (donor, recipient)}
    edits = build_tests(donor, recipient, cfg, max_pairs)
    viewed = {key: {t: view_edits(e, vs) for t, e in edits.items()} for key, vs in views.items()}
    metrics: dict[str, Any] = {"models": {}, "pairs": {t: len(e) for t, e in edits.items()}}
    raws = {}
    for model in models:
        log.info("scoring %s", model.label)
        metrics["models"][model.label], raws[model.label] = model_metrics(
            model, views[model.view_key], viewed[model.view_key], cfg, donor, recipient, livers
        )
    metrics["comparisons"] = paired_comparisons(models, raws, edits["lesion"], cfg)
    first = metrics["models"][models[0].label]["pixel_counts_real_tumours"]
    metrics["lesion_pairs"] = [
        {k: v for k, v in e.info.items()} | {"recipient_slice": e.index} for e in edits["lesion"]
    ]
    metrics["data"] = {
        "donor_spacing": f"{donor.spacing[0]:.3f}",
        "recipient_spacing": f"{recipient.spacing[0]:.3f}",
        "donor_landmark_mm": donor.body.landmark_mm - donor.positions_mm[0],
        "recipient_landmark_mm": recipient.body.landmark_mm - recipient.positions_mm[0],
        "parity": parity,
        "n_pix_tumour": first["tumour"],
        "n_pix_liver": first["liver"],
    }
    metrics["config"] = {k: v for k, v in cfg.__dict__.items()}
    key0 = models[0].view_key
    plot_roc(raws, donor, cfg, out_dir / "roc.png")
    plot_profile(raws, donor, cfg, out_dir / "z_profile.png")
    plot_grid(raws, viewed[key0], views[key0], donor, out_dir / "heatmaps.png")
    runtime = time.perf_counter() - t0
    metrics["runtime_s"] = runtime
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    reading_path = out_dir / "READING.md"
    reading = reading_path.read_text() if reading_path.exists() else ""
    (out_dir / "REPORT.md").write_text(report_markdown(metrics, cfg, runtime, reading))
    return metrics


def parse_checkpoints(items: list[str]) -> dict[str, Path]:
    """``LABEL=PATH`` arguments -> {label: path}; ValueError names the first bad one (no '=', empty label or
    path, a label given twice, no such file)."""
    pairs: dict[str, Path] = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not (sep and label and path):
            raise ValueError(f"expected LABEL=PATH, got {item!r}")
        if label in pairs:
            raise ValueError(f"label {label!r} given twice")
        if not Path(path).is_file():
            raise ValueError(f"no such checkpoint file: {path}")
        pairs[label] = Path(path)
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate anomaly scorers on the position-matched real-CT tests.")
    parser.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("reports/scorer-wholeview"))
    parser.add_argument("--max-pairs", type=int, default=240)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--segmenter", type=Path, default=None, help="for liver-restricted checkpoints")
    parser.add_argument("--kappa-ablation", action="store_true", help="also score each f-AnoGAN with kappa = 0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    try:
        checkpoints = parse_checkpoints(args.checkpoint)
    except ValueError as exc:
        parser.error(f"--checkpoint: {exc}")
    metrics = evaluate_scorer(checkpoints, args.data_dir, args.out, max_pairs=args.max_pairs, segmenter=args.segmenter,
                               kappa_ablation=args.kappa_ablation)  # fmt: skip
    print(
        json.dumps(
            {
                k: {"lesion": m["tests"].get("lesion", {}).get("auroc"), "split": m["slice_split"]["auroc"]}
                for k, m in metrics["models"].items()
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""``reports/scorer/summary.json``, ``REPORT.md`` and its plots from ``patch_report``'s metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from app.core.plotting import pyplot

GANS = ("fanogan", "inpaint")
TYPES = ("lesion", "blob", "warp", "metal")


def _mean(m: dict[str, Any]) -> float:
    v = m.get("mean_auroc_all_anomaly_types")
    return -1.0 if v is None else float(v)


def _steps_note(dets: dict[str, Any], training: dict[str, dict[str, Any]]) -> str:
    """Each GAN's steps (its first fold's checkpoint) and the folds it was trained for (read, not written in)."""
    parts = []
    for g in (g for g in GANS if g in dets):
        folds = ", ".join(sorted(dets[g].get("per_fold", {})))
        parts.append(f"{g}: {training.get(g, {}).get('steps')} steps, folds {folds}")
    return "; ".join(parts)


def _partial(dets: dict[str, Any], folds: dict[str, Any]) -> str:
    """The detectors trained for only some of the folds, in words (empty when every one has every fold)."""
    some = [f"{d} ({', '.join(sorted(v.get('per_fold', {})))})" for d, v in sorted(dets.items())
            if set(v.get("per_fold", {})) != set(folds)]  # fmt: skip
    return f"; trained for some folds only: {', '.join(some)}" if some else ""


def conditioning_of(result: dict[str, Any]) -> dict[str, Any]:
    """GAN -> its conditioned-minus-unconditioned lesion-pair comparison (None where the ablation is missing);
    metrics written before session 18 held f-AnoGAN's alone."""
    if "conditioning" in result:
        return {g: v for g, v in result["conditioning"].items() if v}
    old = result.get("conditioned_minus_unconditioned")
    return {"fanogan": old} if old else {}


def summary(result: dict[str, Any], training: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The keys issue #13 asks for, for the best GAN (by the mean AUROC over all anomaly types)."""
    dets = result["detectors"]
    gans = [g for g in GANS if g in dets]
    if not gans:
        raise ValueError(f"no GAN among the evaluated detectors {sorted(dets)}: train them first "
                         "(scripts/train-patch-folds.sh writes runs/patch/<fold>-<detector>/scorer.pt)")  # fmt: skip
    best = max(gans, key=lambda g: _mean(dets[g]))
    shipped = max(dets, key=lambda d: _mean(dets[d]))
    m = dets[best]
    diff = conditioning_of(result).get(best) or {}
    return {
        "detector": best,
        "gan_generator_steps": training.get(best, {}).get("steps"),
        "train_minutes": training.get(best, {}).get("train_minutes"),
        "lesion_pair_auroc_ge15mm": m.get("lesion_pair_auroc_ge15mm"),
        "lesion_pairs_ge15mm": m.get("lesion_pairs_ge15mm"),
        "pixel_auroc_liver": m.get("pixel_auroc_liver"),
        "conditioned_minus_unconditioned": diff.get("difference"),
        "conditioned_minus_unconditioned_ci95": diff.get("ci95"),
        "mean_auroc_all_anomaly_types": m.get("mean_auroc_all_anomaly_types"),
        "pair_auroc_by_type": m.get("pair_auroc"),
        "trivial_baseline_mean_auroc_all_anomaly_types": dets.get("deviation", {}).get("mean_auroc_all_anomaly_types"),
        "autoencoder_mean_auroc_all_anomaly_types": dets.get("ae", {}).get("mean_auroc_all_anomaly_types"),
        "patchcore_mean_auroc_all_anomaly_types": dets.get("patchcore", {}).get("mean_auroc_all_anomaly_types"),
        "unseen_normal_fpr": m["unseen_normal_fpr"]["mean"],
        "unseen_normal_fpr_per_patient": {k: v["fpr"] for k, v in m["unseen_normal_fpr"]["per_patient"].items()},
        "gan_steps_note": _steps_note(dets, training),
        "per_detector": {
            d: {
                "mean_auroc_all_anomaly_types": v.get("mean_auroc_all_anomaly_types"),
                "lesion_pair_auroc_ge15mm": v.get("lesion_pair_auroc_ge15mm"),
                "pixel_auroc_liver": v.get("pixel_auroc_liver"),
                "unseen_normal_fpr": v["unseen_normal_fpr"]["mean"],
                "folds": sorted(v.get("per_fold", {})),
            }
            for d, v in dets.items()
        },  # fmt: skip
        "best_over_all_anomaly_types": shipped,
        "best_mean_auroc_all_anomaly_types": dets[shipped].get("mean_auroc_all_anomaly_types"),
        "folds": result["folds"],
        "committed_scorers_unseen_fpr": {
            c["file"]: {k: v["fpr"] for k, v in c["per_patient"].items()} for c in result.get("shipped") or []
        },
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def plot_aurocs(dets: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    names = sorted(dets)
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=100)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [dets[name]["pair_auroc"].get(t) or 0.0 for t in TYPES]
        ax.bar(np.arange(len(TYPES)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(TYPES)) + 0.4 - width / 2, TYPES)
    ax.set_ylim(0.4, 1.01)
    ax.axhline(0.5, color="k", lw=0.5)
    ax.set_ylabel("pair AUROC (held-out patients)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_examples(folds: dict[str, Any], path: Path) -> bool:
    """One edited slice per anomaly type (first fold): CT, then each detector's heat with its colour bar."""
    fold = next((f for f in folds.values() if f.get("examples")), None)
    if fold is None:
        return False
    plt = pyplot()
    types = [t for t in TYPES if t in fold["examples"]]
    names = sorted(next(iter(fold["examples"].values()))["heat"])
    fig, axes = plt.subplots(len(types), 1 + len(names), figsize=(2.6 * (1 + len(names)), 2.4 * len(types)), dpi=90,
                             squeeze=False)  # fmt: skip
    for row, t in zip(axes, types, strict=True):
        ex = fold["examples"][t]
        row[0].imshow(ex["image"], cmap="gray", vmin=-1, vmax=1)
        row[0].contour(ex["region"], levels=[0.5], colors="c", linewidths=0.6)
        row[0].set_title(f"{t} ({fold['host']})", fontsize=8)
        for ax, name in zip(row[1:], names, strict=True):
            ax.imshow(ex["image"], cmap="gray", vmin=-1, vmax=1)
            heat = np.ma.masked_where(~ex["liver"], ex["heat"][name])  # the maps are read inside the liver only
            im = ax.imshow(heat, cmap="inferno", alpha=0.7)
            ax.contour(ex["region"], levels=[0.5], colors="c", linewidths=0.6)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(name, fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def patchcore_lines(memory: dict[str, Any]) -> list[str]:
    """What the PatchCore baseline's memory held, per fold (``workers.evaluation.patchcore_eval``)."""
    if not memory:
        return []
    lines = ["", "PatchCore (no training): the shipped segmenter's encoder (trained on totalseg-s0009 and",
             "totalseg-example only, so it never saw a held-out patient), features of encoder levels "
             f"{next(iter(memory.values()))['levels']}", "averaged over 3 x 3 cells, a greedy coreset of "
             "the normal liver slices of the fold's other patients:", ""]  # fmt: skip
    for fold, m in memory.items():
        cases = ", ".join(f"{k} ({v['slices']} slices)" for k, v in m["cases"].items())
        lines.append(f"- fold {fold}: {m['bank']} of {m['vectors']} feature vectors, from {cases}")
    return lines


def write_report(result: dict[str, Any], training: dict[str, dict[str, Any]], out: Path, command: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    s = summary(result, training)
    (out / "summary.json").write_text(json.dumps(s, indent=2, default=float))
    dets = result["detectors"]
    plot_aurocs(dets, out / "pair_auroc.png")
    has_examples = plot_examples(result.get("examples", {}), out / "examples.png") or (out / "examples.png").exists()
    lines = [
        "# Patch scorers on held-out patients (issue #13)",
        "",
        f"Made by `{command}`; every figure below comes from that command's `metrics.json`.",
        "",
        "Leave one normal patient out: each fold's models never saw its host patient. Lesions are real tumours",
        "of other patients transplanted at the same level (position-matched pairs: the same slice with and",
        "without the lesion); blobs, deformations and metal are made in the same livers.",
        "",
        "## Folds",
        "",
        "| fold | held-out patient | pairs per test |",
        "|---|---|---|",
    ]
    for k, v in result["folds"].items():
        lines.append(f"| {k} | {v['host']} | {v['tests']} |")
    lines += ["", "## Pair AUROC per anomaly type (pooled over folds), pixel AUROC, unseen-patient FPR", "",
              "| detector | lesion | lesion >= 15 mm | blob | warp | metal | mean of 4 | pixel AUROC (liver) "
              "| FPR at 5 % |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in sorted(dets, key=lambda d: -_mean(dets[d])):
        m = dets[name]
        pa = m["pair_auroc"]
        lines.append(
            f"| {name} | {_fmt(pa.get('lesion'))} | {_fmt(m.get('lesion_pair_auroc_ge15mm'))} | "
            f"{_fmt(pa.get('blob'))} | "
            f"{_fmt(pa.get('warp'))} | {_fmt(pa.get('metal'))} | {_fmt(m.get('mean_auroc_all_anomaly_types'))} | "
            f"{_fmt(m.get('pixel_auroc_liver'))} | {_fmt(m['unseen_normal_fpr']['mean'])} |"
        )
    lines += ["", f"Per fold (the same pairs for every detector of a fold{_partial(dets, result['folds'])}):", "",
              "| fold | detector | lesion | blob | warp | metal | mean of 4 |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for fold in result["folds"]:
        for name in sorted(dets, key=lambda d: -_mean(dets[d])):
            pf = dets[name].get("per_fold", {}).get(fold)
            if pf:
                vals = [pf.get(t) for t in TYPES]
                mean = float(np.mean(vals)) if all(v is not None for v in vals) else None
                lines.append(
                    f"| {fold} ({pf['host']}) | {name} | " + " | ".join(_fmt(v) for v in vals) + f" | {_fmt(mean)} |"
                )
    lines += patchcore_lines(result.get("patchcore_memory") or {})
    lines += ["", "![pair AUROC](pair_auroc.png)", ""]
    if has_examples:
        lines += ["Heat-maps over the CT (1 mm liver grid, window +-200 HU around the liver median), the anomaly",
                  "outlined in cyan, each with its own colour bar:", "", "![examples](examples.png)", ""]  # fmt: skip
    lines += [
        "## 95 % intervals (resampling whole donor tumours or host slices)",
        "",
    ]
    for name in sorted(dets):
        lines.append(f"- {name}: " + ", ".join(f"{t} {_fmt(v)}" for t, v in dets[name]["pair_auroc_ci95"].items()))
    lines += ["", "## Unseen-patient false-positive rate", "",
              "Threshold: split-conformal quantile at 5 % of the *other* folds' held-out normal slices.", "",
              "| detector | patient | threshold | FPR | normal slices |", "|---|---|---|---|---|"]  # fmt: skip
    for name in sorted(dets):
        for patient, v in dets[name]["unseen_normal_fpr"]["per_patient"].items():
            lines.append(f"| {name} | {patient} | {v['threshold']:.4g} | {v['fpr']:.3f} | {v['n_normal']} |")
    for shipped in result.get("shipped") or []:
        lines += ["", f"### The committed `{shipped['file']}`", "",
                  f"Trained on {', '.join(shipped['trained_on']) or 'nothing (a rule)'} only, calibrated "
                  f"(threshold {shipped['threshold']:.4g}) on {', '.join(shipped['calibrated_on'])}; "
                  "false-positive rate on normal liver slices of patients it "
                  "never saw:", "", "| patient | FPR | normal slices |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {k} | {v['fpr']:.3f} | {v['n_normal']} |" for k, v in shipped["per_patient"].items()]
    lines += ["", "## Conditioning", ""]
    compared = conditioning_of(result)
    for gan, diff in compared.items():
        lines.append(f"- {gan}: lesion pair AUROC, conditioned minus unconditioned on the same pairs: "
                     f"{_fmt(diff['difference'])}, 95 % interval {_fmt(diff['ci95'])} ({diff['tumours']} donor "
                     f"tumours, {diff['pairs']} pairs; folds {', '.join(diff.get('folds', []))}).")  # fmt: skip
    missing = [g for g in GANS if g in result["detectors"] and g not in compared]
    if missing:
        lines.append(f"Not measured for {', '.join(missing)}: no unconditioned model (`<fold>-<gan>-uncond`, "
                     "`patch_training --unconditioned`) was trained beside it.")  # fmt: skip
    lines += ["", "## Training", ""] + [
        f"- {k}: {_fmt(v.get('steps'))} steps, {_fmt(v.get('train_minutes'))} min" for k, v in training.items()
    ]
    lines += ["", "## Summary", "", "```json", json.dumps(s, indent=2, default=float), "```", ""]
    (out / "REPORT.md").write_text("\n".join(lines))
    return s

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.anomalies import diameter_bin, disc_warp, gaussian_blob, metal_disc, valid_placements
from models.scorer import ConvAutoencoder, FAnoGAN
from models.transforms import PreprocessConfig
from workers.pipelines.lesion_pairs import (  # shared with gate_eval
    SLAB,
    Case,
    Edit,
    EvalConfig,
    SeriesView,
    auroc,
    compact_edit,
    indices_of,
    load_case,
    make_lesion_edits,
)
from workers.pipelines.lesion_pairs import slab_indices as _slab
from workers.pipelines.liver_roi import roi_of, roi_valid
from workers.pipelines.scorer_inference import configs_from_metadata, load_scorer, predict_slices, score_volume

log = logging.getLogger(__name__)


def make_synthetic_edits(host: Case, slices: list[int], per_slice: int, cfg: EvalConfig) -> list[Edit]:
    """Blob, warp and metal in the host's liver (whole disc inside the centre slice's liver);
    the same 2-D edit on each slice of the 5-slice slab."""
    rng = np.random.default_rng(cfg.seed + 1)
    sp = host.spacing[0]
    kinds = {"blob": 3 * cfg.blob_sigma_mm / sp, "warp": cfg.warp_radius_mm / sp, "metal": cfg.metal_radius_mm / sp + 1}
    edits = []
    for kind, radius in kinds.items():
        r = int(np.ceil(radius))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        footprint = yy**2 + xx**2 <= radius**2
        for n, k in enumerate(slices):
            corners = np.argwhere(valid_placements(host.liver[k], footprint))
            for m in range(per_slice if corners.size else 0):
                y, x = corners[rng.integers(len(corners))]
                centre = (float(y + r), float(x + r))
                sign = 1.0 if (n + m) % 2 == 0 else -1.0
                replaced, region = {}, None
                for kk in _slab(host, k):
                    if kind == "blob":
                        out, reg = gaussian_blob(
                            host.hu[kk], centre, cfg.blob_sigma_mm / sp, sign * cfg.blob_amplitude_hu
                        )
                    elif kind == "warp":
                        out, reg = disc_warp(
                            host.hu[kk], centre, radius, cfg.warp_shift_mm / sp, seed=cfg.seed + 1000 * n + m
                        )
                    else:
                        out, reg = metal_disc(host.hu[kk], centre, cfg.metal_radius_mm / sp)
                    replaced[kk] = out
                    region = reg if kk == k else region
                info = {"sign": sign} if kind == "blob" else {}
                edits.append(compact_edit(kind, host, int(k), replaced, region, info))  # type: ignore[arg-type]
    log.info("%s synthetic: %d edits on %d slices", host.name, len(edits), len(slices))
    return edits


# ---------------------------------------------------------------- scoring


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


@dataclass
class ViewedEdits:
    """All edits of one test through one preprocessing: images, valid, region on the view grid."""

    edits: list[Edit]
    images: torch.Tensor  # (N, 3, S, S)
    valid: torch.Tensor  # (N, 1, S, S)
    region: np.ndarray  # (N, S, S) fraction of the lesion / anomaly region per view pixel


def view_edits(edits: list[Edit], views: dict[str, SeriesView]) -> ViewedEdits:
    images, valid, region = [], [], []
    for e in edits:
        view = views[e.case]
        x, v = view.images([e.index], e.slices(view.case))
        images.append(x)
        valid.append(v)
        region.append(view.mask_fraction(e.full_region(view.case)[None])[0])
    if not edits:
        return ViewedEdits([], torch.zeros(0), torch.zeros(0), np.zeros(0))
    return ViewedEdits(edits, torch.cat(images), torch.cat(valid), np.stack(region))


# ---------------------------------------------------------------- metrics


def paired_metrics(base: np.ndarray, modified: np.ndarray) -> dict[str, Any]:
    """AUROC (modified = positive, the pairs' unmodified slices = negative) and the share of pairs
    whose score rose (the paired version: it cancels the between-slice variation)."""
    return {
        "n": int(len(modified)),
        "auroc": auroc(base, modified),
        "rose": float(np.mean(modified > base)) if len(modified) else None,
        "median_rel_change": float(np.median((modified - base) / np.abs(base).clip(1e-12))) if len(modified) else None,
    }


def tumour_resamples(groups: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Indices of ``n_boot`` bootstrap samples that draw whole groups (donor tumours) with replacement."""
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in ids]
    for _ in range(n_boot):
        yield np.concatenate([members[i] for i in rng.integers(len(ids), size=len(ids))])


def cluster_bootstrap_ci(
    base: np.ndarray, modified: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """95 % intervals of AUROC and 'rose', resampling whole groups (donor tumours) with replacement:
    pairs from one tumour are not independent."""
    aurocs, rose = [], []
    for idx in tumour_resamples(groups, n_boot, seed):
        a = auroc(base[idx], modified[idx])
        if a is not None:
            aurocs.append(a)
        rose.append(float(np.mean(modified[idx] > base[idx])))
    q = [2.5, 97.5]
    return {
        "auroc_ci95": [float(v) for v in np.percentile(aurocs, q)],
        "rose_ci95": [float(v) for v in np.percentile(rose, q)],
    }


def auroc_difference_ci(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC of model a minus that of model b on the same (unmodified, modified) pairs, with a 95 %
    interval from resampling whole groups (donor tumours) with replacement, the same resample for both
    models: their errors on one tumour are correlated, so separate intervals would overstate the doubt."""
    diffs = []
    for idx in tumour_resamples(groups, n_boot, seed):
        da, db = auroc(a[0][idx], a[1][idx]), auroc(b[0][idx], b[1][idx])
        if da is not None and db is not None:
            diffs.append(da - db)
    full_a, full_b = auroc(*a), auroc(*b)
    return {
        "difference": None if full_a is None or full_b is None else full_a - full_b,
        "ci95": [float(v) for v in np.percentile(diffs, [2.5, 97.5])] if diffs else None,
        "n_pairs": int(len(groups)),
        "n_groups": int(len(np.unique(groups))),
    }


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


def top_fraction_score(heat: np.ndarray, valid: torch.Tensor, fraction: float = 0.01) -> np.ndarray:
    """Diagnostic score, not the model's: mean of the top ``fraction`` of each heat-map's valid pixels."""
    from models.scorer import reduce_map

    return reduce_map(torch.as_tensor(heat)[:, None], valid, fraction).numpy()


def pixel_auroc(heat: np.ndarray, positive: np.ndarray, inside: np.ndarray) -> float | None:
    """Pooled pixel AUROC of ``heat`` inside ``inside`` (bool), labels ``positive`` (bool)."""
    sel = inside.astype(bool)
    return auroc(heat[sel & ~positive], heat[sel & positive])


def fpr_metrics(heldout: np.ndarray, threshold: float, source: str, target: float) -> dict[str, Any]:
    """FPR at the calibrated threshold, and a cross-fitted FPR (threshold from one half of the
    held-out slices, rate on the other, both ways; the halves are alternate slices)."""
    from models.scorer import calibrate_threshold, false_positive_rate

    halves = [heldout[0::2], heldout[1::2]]
    cross = [
        false_positive_rate(torch.as_tensor(halves[1 - h]), calibrate_threshold(torch.as_tensor(halves[h]), target))
        for h in (0, 1)
    ]
    return {
        "threshold": threshold,
        "threshold_source": source,
        "target_fpr": target,
        "fpr_heldout": false_positive_rate(torch.as_tensor(heldout), threshold),
        "fpr_crossfit": float(np.mean(cross)),
        "n_heldout": int(len(heldout)),
    }


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
        "auroc_diagnostic_top1pct": auroc(d_top[normal], d_top[tumour]),
        "auroc": auroc(d_scores[normal], d_scores[tumour]),
        "auroc_position_only": auroc(pos_mm[normal], pos_mm[tumour]),
        "auroc_liver_slices": auroc(d_scores[liver_normal], d_scores[tumour]),
        "auroc_liver_slices_position_only": auroc(pos_mm[liver_normal], pos_mm[tumour]),
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


# ---------------------------------------------------------------- figures


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(raws: dict[str, dict[str, Any]], donor: Case, cfg: EvalConfig, path: Path) -> None:
    from sklearn.metrics import roc_curve

    plt = _plt()
    panels = [
        ("lesion", "lesion pairs (all)"),
        ("lesion>=15", "lesion pairs >= 15 mm"),
        ("lesion-unmatched", "lesion, unmatched, unseen host"),
        ("blob@" + donor.name, "blob (unseen host)"),
        ("warp@" + donor.name, "warp (unseen host)"),
        ("metal@" + donor.name, "metal (unseen host)"),
        ("split", "real split ircadb-01"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for label, raw in raws.items():
            if key == "split":
                s = raw["full"][donor.name][0]
                neg, pos = s[indices_of(cfg.heldout_normal)], s[indices_of(cfg.donor_tumour)]
            elif key == "lesion>=15":
                if "lesion" not in raw:
                    continue
                sel = np.array([b == f">={cfg.diameter_edges_mm[-1]:g}" for b in raw["lesion_bins"]])
                neg, pos = raw["lesion"][0][sel], raw["lesion"][1][sel]
            elif key in raw:
                neg, pos = raw[key][0], raw[key][1]
            else:
                continue
            if len(neg) and len(pos):
                fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
                ax.plot(fpr, tpr, label=f"{label} ({auroc(neg, pos):.2f})")
        if key == "split":
            p = donor.body.position_mm
            neg, pos = p[indices_of(cfg.heldout_normal)], p[indices_of(cfg.donor_tumour)]
            fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
            ax.plot(fpr, tpr, "k--", label=f"position only ({auroc(neg, pos):.2f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(title=title, xlabel="false-positive rate", ylabel="true-positive rate")
        ax.legend(fontsize=7, loc="lower right")
    axes.flat[-1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_profile(raws: dict[str, dict[str, Any]], donor: Case, cfg: EvalConfig, path: Path) -> None:
    plt = _plt()
    n = len(raws) + 1
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.2 * n), sharex=True)
    z = np.arange(donor.hu.shape[0])
    tumour_slices = donor.tumour.any(axis=(1, 2))
    for ax in axes:
        for k in np.flatnonzero(tumour_slices):
            ax.axvspan(k - 0.5, k + 0.5, color="tab:red", alpha=0.12, lw=0)
        for lo, hi in cfg.heldout_normal:
            ax.axvspan(lo - 0.5, hi + 0.5, color="tab:green", alpha=0.07, lw=0)
    for ax, (label, raw) in zip(axes, raws.items(), strict=False):
        ax.plot(z, raw["full"][donor.name][0], ".-", ms=3, label=f"{label} slice score")
        ax.axhline(raw["threshold"], color="k", ls="--", lw=1, label="calibrated threshold")
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].plot(z, donor.body.position_mm, color="tab:purple", label="position from the lung base (mm)")
    axes[-1].legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel(f"{donor.name} slice index (caudal -> cranial); red: tumour voxels, green: held-out normal")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_grid(
    raws: dict[str, dict[str, Any]],
    tests: dict[str, ViewedEdits],
    views: dict[str, SeriesView],
    donor: Case,
    path: Path,
) -> None:
    """Rows: example slices (real tumours, lesion pairs, synthetic); columns: input, each model's heat-map."""
    plt = _plt()
    rows: list[tuple[str, np.ndarray, np.ndarray | None, dict[str, np.ndarray]]] = []
    view = views[donor.name]
    tumour_idx = np.flatnonzero(donor.tumour.sum(axis=(1, 2)))
    areas = donor.tumour.sum(axis=(1, 2))
    picked: list[int] = []
    for t in sorted(tumour_idx.tolist(), key=lambda i: -areas[i]):
        if len(picked) < 3 and all(abs(t - p) >= 12 for p in picked):
            picked.append(t)
    for k in picked:
        x, _ = view.images([int(k)])
        rows.append(
            (
                f"{donor.name} #{k} real tumour",
                x[0, 1].numpy(),
                view.mask_fraction(donor.tumour[k][None])[0],
                {m: r["full"][donor.name][1][k] for m, r in raws.items()},
            )
        )
    for test in ("lesion", "blob@" + donor.name, "warp@" + donor.name, "metal@" + donor.name):
        ve = tests.get(test)
        if ve is None or not ve.edits:
            continue
        pick = int(
            np.argmax(
                [
                    e.info.get("diameter_mm", 0.0) + (ve.region[i].sum() if test != "lesion" else 0)
                    for i, e in enumerate(ve.edits)
                ]
            )
        )
        e = ve.edits[pick]
        if test == "lesion":
            x, _ = views[e.case].images([e.index])
            rows.append(
                (
                    f"{e.case} #{e.index} unmodified",
                    x[0, 1].numpy(),
                    None,
                    {m: r["full"][e.case][1][e.index] for m, r in raws.items()},
                )
            )
        rows.append(
            (
                f"{e.case} #{e.index} + {test.split('@')[0]}",
                ve.images[pick, 1].numpy(),
                ve.region[pick],
                {m: r[test][2][pick] for m, r in raws.items() if test in r},
            )
        )
    cols = 1 + len(raws)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.3 * cols, 2.3 * len(rows)), squeeze=False)
    for r, (title, image, region, heats) in enumerate(rows):
        axes[r, 0].imshow(image, cmap="gray", vmin=-1, vmax=1)
        if region is not None:
            axes[r, 0].contour(region, levels=[0.5], colors="r", linewidths=0.8)
        axes[r, 0].set_title(title, fontsize=7)
        for c, label in enumerate(raws, start=1):
            if label in heats:
                axes[r, c].imshow(heats[label], cmap="inferno")
                if region is not None:
                    axes[r, c].contour(region, levels=[0.5], colors="c", linewidths=0.8)
            axes[r, c].set_title(f"{label} heat-map", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- report


def _f(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _ci(v: list[float] | None) -> str:
    return "n/a" if not v else f"[{v[0]:.2f}, {v[1]:.2f}]"


def report_markdown(metrics: dict[str, Any], cfg: EvalConfig, runtime_s: float, reading: str = "") -> str:
    models = metrics["models"]
    bins = [diameter_bin(d, cfg.diameter_edges_mm) for d in (0.0, *cfg.diameter_edges_mm)]
    lines = [
        "# Scorer evaluation on real CT (issue #5, part 6)",
        "",
        f"Generated by `python -m workers.pipelines.scorer_eval` in {runtime_s:.0f} s. "
        "Research evaluation on non-commercial data (3D-IRCADb-01): numbers and plots of numbers only.",
        "",
        "## Models and training state",
        "",
        "| model | detector | conditional | GAN steps (planned) | encoder/AE steps (planned) | phase "
        "| threshold from |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in models.items():
        t = m["training"]
        lines.append(
            f"| {label} | {t['detector']} | {t['conditional']} | {t['gan_step']} ({t['gan_steps_planned']}) | "
            f"{t['encoder_step']} ({t['encoder_steps_planned']}) | {t['phase']} | {m['fpr']['threshold_source']} |"
        )
    lines += [
        f"\n`{label}`: the weights of `{m['training']['ablation_of']}` scored with kappa = 0 (the pixel residual "
        "alone, no critic-feature term; `--kappa-ablation`), its threshold calibrated in this evaluation."
        for label, m in models.items()
        if m["training"].get("ablation_of")
    ]
    lines += [
        "",
        "## Results",
        "",
        "AUROC: modified slices (positive) against the same slices unmodified (negative); "
        "'rose': share of pairs whose score went up. Chance = 0.50.",
        "",
        "| model | lesion pairs (n) | AUROC all | "
        + " | ".join(f"AUROC {b} (n)" for b in bins)
        + " | rose all | 95 % CI by tumour: AUROC; rose | pixel AUROC (transplants) |",
        "|---" * (6 + len(bins)) + "|",
    ]
    for label, m in models.items():
        t = m["tests"].get("lesion", {})
        by = t.get("by_diameter", {})
        cells = [f"{_f(by.get(b, {}).get('auroc'))} ({by.get(b, {}).get('n', 0)})" for b in bins]
        lines.append(
            f"| {label} | {t.get('n', 0)} | {_f(t.get('auroc'))} | "
            + " | ".join(cells)
            + f" | {_f(t.get('rose'))} | {_ci(t.get('auroc_ci95'))}; {_ci(t.get('rose_ci95'))}"
            + f" | {_f(t.get('pixel_auroc'))} |"
        )
    synth = sorted({k for m in models.values() for k in m["tests"] if "@" in k} | {"lesion-unmatched"})
    lines += [
        "",
        "| model | " + " | ".join(f"{k} AUROC (n) / rose" for k in synth) + " |",
        "|---" * (1 + len(synth)) + "|",
    ]
    for label, m in models.items():
        cells = [
            "{} ({}) / {}".format(
                _f(m["tests"].get(k, {}).get("auroc")),
                m["tests"].get(k, {}).get("n", 0),
                _f(m["tests"].get(k, {}).get("rose")),
            )
            for k in synth
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | pixel AUROC, real tumours in liver | slice AUROC (normal 0-45,126-128 vs tumour 48-123) | "
        "position only | slice AUROC, liver slices (27-45 vs 48-123) | position only | threshold "
        "| FPR held-out (by construction) (n) | "
        "FPR cross-fitted | tumour slices flagged | unmodified lesion-pair slices flagged |",
        "|---" * 11 + "|",
    ]
    for label, m in models.items():
        s, f = m["slice_split"], m["fpr"]
        lines.append(
            f"| {label} | {_f(m['pixel_auroc_real_tumours'])} | {_f(s['auroc'])} | {_f(s['auroc_position_only'])} | "
            f"{_f(s['auroc_liver_slices'])} | {_f(s['auroc_liver_slices_position_only'])} | {f['threshold']:.4g} | "
            f"{_f(f['fpr_heldout'], 3)} ({f['n_heldout']}) | {_f(f['fpr_crossfit'], 3)} | "
            f"{_f(f['flagged_tumour_slices'])} | {_f(f.get('flagged_lesion_pairs_unmodified'))} |"
        )
    diag = ["lesion", "lesion-unmatched", *[k for k in synth if k != "lesion-unmatched"]]
    lines += [
        "",
        "Diagnostic only (not the models' score): the same pairs scored by the mean of the top 1 % of each "
        "heat-map's pixels instead of its mean, to see whether the map holds a signal that the mean dilutes.",
        "",
        "| model | " + " | ".join(f"{k} AUROC / rose" for k in diag) + " | split AUROC |",
        "|---" * (2 + len(diag)) + "|",
    ]
    for label, m in models.items():
        cells = [
            f"{_f(m['tests'].get(k, {}).get('diagnostic_top1pct', {}).get('auroc'))} / "
            f"{_f(m['tests'].get(k, {}).get('diagnostic_top1pct', {}).get('rose'))}"
            for k in diag
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_f(m['slice_split']['auroc_diagnostic_top1pct'])} |")
    lines += [
        "",
        "Figures: `roc.png` (ROC per test), `z_profile.png` (slice score along z, ircadb-01), "
        "`heatmaps.png` (inputs and heat-maps; it shows 3D-IRCADb CT, CC BY-NC-ND, so it stays out of the "
        "repository: regenerate it with `gatekeeper evaluate-scorer`).",
        "",
    ]
    lines += comparison_lines(metrics, cfg)
    lines += ["## Data and methods", "", *METHODS.format(**{**cfg.__dict__, **metrics["data"]}).splitlines()]
    lines += ["", "## Goals (context, not claims)", ""]
    lines += goal_lines(metrics, cfg)
    if reading:
        lines += ["", "## Reading (hand-written for this run: READING.md beside this report)", "", reading.strip()]
    return "\n".join(lines) + "\n"


def comparison_lines(metrics: dict[str, Any], cfg: EvalConfig) -> list[str]:
    if not metrics.get("comparisons"):
        return []
    top = f">={cfg.diameter_edges_mm[-1]:g}"
    lines = [
        "Paired comparisons on the position-matched lesion pairs: AUROC of a minus AUROC of b on the very same "
        "pairs, 95 % interval from resampling whole donor tumours (the same resample for both models). An "
        "interval that contains 0 shows no difference.",
        "",
        f"| a | b | difference, all pairs (n; tumours) | 95 % CI | difference, lesions {top} mm (n; tumours) "
        "| 95 % CI |",
        "|---|---|---|---|---|---|",
    ]
    for c in metrics["comparisons"]:
        cells = []
        for key in ("all", top):
            d = c.get(key)
            cells += ["-", "-"] if d is None else [
                f"{_f(d['difference'])} ({d['n_pairs']}; {d['n_groups']})", _ci(d["ci95"])
            ]  # fmt: skip
        lines.append(f"| {c['a']} | {c['b']} | " + " | ".join(cells) + " |")
    return lines + [""]


def goal_lines(metrics: dict[str, Any], cfg: EvalConfig) -> list[str]:
    top = f">={cfg.diameter_edges_mm[-1]:g}"
    out = []
    for label, m in metrics["models"].items():
        big = m["tests"].get("lesion", {}).get("by_diameter", {}).get(top, {}).get("auroc")
        pix = m["pixel_auroc_real_tumours"]
        out.append(
            f"- {label}: position-matched AUROC for lesions {top} mm = {_f(big)} (goal >= 0.95: "
            f"{'met' if big is not None and big >= 0.95 else 'not met'}); pixel AUROC = {_f(pix)} (goal >= 0.90: "
            f"{'met' if pix is not None and pix >= 0.90 else 'not met'})."
        )
    for c in metrics.get("comparisons", []):
        a, b = metrics["models"][c["a"]]["training"], metrics["models"][c["b"]]["training"]
        if a["detector"] == b["detector"] == "fanogan" and a["conditional"] and not b["conditional"]:
            ok = c["all"]["ci95"] is not None and c["all"]["ci95"][0] > 0
            out.append(
                f"- conditioning ({c['a']}) vs none ({c['b']}) on all lesion pairs: AUROC difference "
                f"{_f(c['all']['difference'])} {_ci(c['all']['ci95'])} (goal: better than none, "
                f"{'met' if ok else 'not shown'}: the interval must lie above 0)."
            )
    return out


METHODS = """- Cases: donor `{donor}` (tumour mask `masks/tumor.nii.gz`, liver `masks/liver.nii.gz`, liver-only = `labels.nii.gz` == 1); recipient `{recipient}`. Both 1.6 mm slices; pixel spacing {donor_spacing} and {recipient_spacing} mm. Positions: `find_body_position` (signed mm from the lung base) on each whole series; lung base {donor_landmark_mm:.1f} mm above the first slice of `{donor}`, {recipient_landmark_mm:.1f} mm above that of `{recipient}`.
- Preprocessing: each model's own `PreprocessConfig` from its checkpoint through `models.transforms` (intensity shift and view centre from the unmodified series; a start-up check found max |difference| {parity:.2e} to `preprocess_series`). Conditioned models get each slice's normalised position.
- **Position-matched lesion test**: every cross-section (>= {min_lesion_diameter_mm} mm equivalent diameter) of every 3-D tumour component of `{donor}` slices {donor_tumour} is a donor; recipients are `{recipient}` normal-liver slices {recipient_normal} whose position from the lung base is within +-{position_tolerance_mm} mm of the donor slice's. The tumour is cut along its mask on 5 slices (centre +-2, covering the +-3 mm neighbour channels, so **neighbour channels are modified consistently**: donor slice j+d goes to recipient slice k+d), resampled in-plane by the pixel-spacing ratio, re-levelled to keep its contrast to its own liver (HU - donor liver median on the centre slice + recipient liver median on the centre slice), and blended with alpha = 1 on the mask, falling linearly to 0 over {feather_mm} mm outside it (distance transform). The whole alpha support must lie in the recipient's liver mask on the centre slice (a random valid place is drawn); on neighbour slices alpha is cut to that slice's liver. Diameter = equivalent diameter sqrt(4A/pi) of the transplanted centre cross-section. Pairs are drawn at random with a quota per diameter bin. Each pair: score of the modified slice vs the same slice unmodified.
- Caveat on recipients: the only normal liver at the donor's tumour levels in another patient is `{recipient}` slices 0-75, which are **training slices** of every model. The opposite direction (`{recipient}` tumours, +7 to +63 mm, into `{donor}`'s held-out normal liver, -116 to -88 mm) cannot be position-matched; it is reported as `lesion-unmatched` (same method, no position constraint, recipient never seen).
- **Synthetic anomalies** (MOOD-style), centre placed at random so the whole disc lies in the host's liver on the centre slice, the same 2-D edit applied to the 5 slab slices: blob = Gaussian, sigma {blob_sigma_mm} mm, truncated at 3 sigma, amplitude +-{blob_amplitude_hu} HU (alternating sign); warp = random smooth displacement (Gaussian-filtered noise, sigma = R/3, max {warp_shift_mm} mm) times (1 - r^2/R^2)^2 in a disc R = {warp_radius_mm} mm, bilinear; metal = disc radius {metal_radius_mm} mm at 3000 HU with a 1-pixel linear edge, no streaks. Hosts: `{donor}` held-out normal liver slices {donor_normal_liver} (unseen patient, {synthetic_per_slice} per slice) and `{recipient}` normal slices (training slices, 2 per slice on every 4th slice).
- **Pixel AUROC**: heat-maps of `{donor}` slices {donor_tumour} against the tumour and liver masks mapped into the model's view with the same resampling (`resample_inplane`, same centre); pixels with liver fraction >= 0.5 inside the field of view; tumour = tumour fraction >= 0.5; pooled over slices ({n_pix_tumour} tumour and {n_pix_liver} liver pixels at the first model's view).
- **Slice AUROC**: held-out normal `{donor}` {heldout_normal} vs tumour slices {donor_tumour}; beside it the AUROC of the slice's position alone (mm from the lung base as the score), and the same among liver slices only.
- **FPR**: threshold = checkpoint calibration when present, else calibrated here (same `calibrate_threshold`, target {target_fpr}) on the held-out normal slices. The FPR on those same slices is <= target by construction; the cross-fitted FPR calibrates on alternate slices and measures on the others (both ways, averaged).
- **Liver-restricted models** (checkpoint metadata `roi`, `workers/pipelines/liver_roi.py`): the slice score is the model's own reduction taken only over the liver the segmenter (`--segmenter`, the one the threshold was calibrated with) predicts on the unmodified series, holes filled slice by slice, eroded by the stored margin; heat-maps (pixel AUROC, figures) stay whole. Both sides of a pair are scored in the region of the unmodified slice (the worker would segment the modified slice; `evaluate-gate` does). A start-up check compares the donor's scores with the worker's `score_volume`. Slices without predicted liver score 0; the FPR columns count only held-out slices with liver in the region."""  # noqa: E501


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
        from workers.pipelines.segmenter_inference import load_segmenter, segment_mask

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
    parser.add_argument("--out", type=Path, default=Path("reports/scorer"))
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

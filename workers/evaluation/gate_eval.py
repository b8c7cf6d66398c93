"""Gate evaluation (issue #3, part 6): does the anomaly score predict where the segmenter fails?

``evaluate_gate(scorer, segmenter, data_dir, out_dir)`` runs both models the way the worker does
(``score_volume`` with the fast path, ``segment_mask``) and writes out_dir/REPORT.md, metrics.json
and PNG plots (``gate_report``):

1. held-out patient (ircadb-01), every slice: anomaly score, liver Dice against the reference
   (``masks/liver.nii.gz``, tumours included: the segmenter's own training target), failure =
   Dice < 0.9 on a slice whose reference holds liver. Dice of accepted against rejected slices at
   the checkpoint's slice threshold, AUROC of the score for failure beside the AUROC of slice
   position alone (position confounds tumour on this patient), risk-coverage curve;
2. series: the worker's decision (series score against ``series_threshold``) and the series Dice,
   for ircadb-01 and ircadb-17 (a same-patient check: its slices 0-75 are training data);
3. position-matched pairs (``lesion_pairs.make_lesion_edits``: the scorer evaluation's lesion test):
   each transplant and the same slice without it, both segmented (neighbour channels see the slab
   edit consistently) and scored; the Dice change says whether the lesion made the segmenter fail,
   and the score must predict that.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.anomalies import diameter_bin
from models.metrics import auroc, bootstrap_auroc_ci, dice
from models.scorer import ConvAutoencoder, FAnoGAN
from models.segmenter import LiverSegmenter, grid_box, mask_on_series_grid, resample_to_box, to_model_grid
from models.transforms import AIR_HU, intensity_shift, interpolate_along_z, window
from workers.evaluation.cases import (
    SLAB,
    Case,
    Edit,
    SeriesView,
    indices_of,
    load_case,
    make_lesion_edits,
)
from workers.evaluation.gate_metrics import (
    GateConfig,
    SeriesRun,
    accepted_rejected,
    failed_slices,
    normal_slices,
    split_metrics,
    threshold_for_acceptance,
)
from workers.inference.liver_roi import fill_holes, roi_from_fraction, roi_of
from workers.inference.scorer import configs_from_metadata, load_scorer, predict_slices, score_volume
from workers.inference.segmenter import load_segmenter, segment_mask

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- one series through both models


def run_series(
    case: Case, scorer: FAnoGAN | ConvAutoencoder, scorer_md: dict, segmenter: LiverSegmenter, fast: bool
) -> SeriesRun:
    """Score (``score_volume``, as ``route.decide``) and segment (``segment_mask``, as ``segment_series``)."""
    mask = segment_mask(segmenter, case.hu, case.spacing, case.positions_mm)
    liver = mask if roi_of(scorer_md) is not None else None  # a liver-restricted scorer scores in this mask
    scored = score_volume(scorer, case.hu, case.spacing, case.positions_mm, scorer_md, fast=fast, liver=liver)
    truth = case.liver
    liver = np.asarray(truth.any(axis=(1, 2)))
    return SeriesRun(
        name=case.name,
        scores=np.asarray(scored.slice_scores, dtype=np.float64),
        positions=scored.positions,
        position_mm=case.body.position_mm,
        series_score=float(scored.series_score),
        dice=dice(mask, truth, axis=(1, 2)),
        liver=liver,
        lesion=(truth & ~case.liver_only).any(axis=(1, 2)),
        liver_area_cm2=truth.sum(axis=(1, 2)) * case.spacing[0] * case.spacing[1] / 100.0,
        predicted_off_liver=int(mask[~liver].sum()),
        series_dice=float(dice(mask, truth)),
        mask=mask,
    )


def series_decision(run: SeriesRun, series_threshold: float | None) -> dict[str, Any]:
    """The worker's routing (route.decide): manual when uncalibrated or above the series threshold."""
    if series_threshold is None:
        decision = "manual (no series threshold)"
    else:
        decision = "manual" if run.series_score > series_threshold else "auto"
    return {
        "series_score": run.series_score,
        "series_threshold": series_threshold,
        "decision": decision,
        "series_dice": run.series_dice,
        "dice_per_slice_mean": float(np.nanmean(run.dice[run.liver])),
        "n_slices": int(len(run.scores)),
    }


def case_slices(entries: list[dict] | tuple, name: str, n: int) -> list[int]:
    """Slice indices of case ``name`` in a checkpoint's data config (train or held-out list)."""
    out: list[int] = []
    for e in entries:
        if e["name"] == name:
            out += list(range(n)) if not e.get("slices") else indices_of(tuple(map(tuple, e["slices"])))
    return sorted({i for i in out if 0 <= i < n})


def series_metrics(
    run: SeriesRun, threshold: float, cfg: GateConfig, calibration: list[int], training: dict[str, list[int]]
) -> dict[str, Any]:
    """Slice-level gate metrics of one series, the position confound beside them, normal-slice acceptance."""
    failed = failed_slices(run.dice, run.liver, cfg.failure_dice)
    blocks = np.arange(len(run.scores)) // cfg.block
    out = split_metrics(run.scores, run.dice, run.liver, failed, threshold, goal_risk=cfg.goal_risk,
                        blocks=blocks, n_boot=cfg.n_boot)  # fmt: skip
    liver = run.liver
    known = liver & np.isfinite(run.position_mm)  # NaN where no lung base was found
    a = auroc(run.position_mm[known], failed[known])
    out["auroc_failure_position_only"] = a
    out["auroc_failure_position_either_direction"] = None if a is None else max(a, 1 - a)
    # diagnostic, not available to a gate: small cross-sections at the liver's ends are where Dice is fragile
    out["auroc_failure_small_liver_area"] = auroc(-run.liver_area_cm2[liver], failed[liver])
    normal = normal_slices(run.liver, run.lesion, cfg.normal_gap)
    accepted = run.scores <= threshold
    calib = np.zeros(len(run.scores), dtype=bool)
    calib[calibration] = True
    out["normal"] = {
        "n": int(normal.sum()),
        "accepted": float(np.mean(accepted[normal])) if normal.any() else None,
        "n_in_calibration": int((normal & calib).sum()),
        "accepted_outside_calibration": float(np.mean(accepted[normal & ~calib])) if (normal & ~calib).any() else None,
    }
    # the smallest threshold that meets the normal-acceptance goal: what the goals allow, whatever the calibration
    t_goal = threshold_for_acceptance(run.scores[normal], cfg.goal_normal_accepted)
    at_goal = None if t_goal is None else accepted_rejected(run.scores[liver], run.dice[liver], failed[liver], t_goal)
    out["at_normal_goal"] = None if at_goal is None else {"threshold": t_goal, **at_goal}
    lesion = run.liver & run.lesion
    out["lesion_slices"] = {
        "n": int(lesion.sum()),
        "accepted": float(np.mean(accepted[lesion])) if lesion.any() else None,
    }
    out["no_liver_slices"] = {"n": int((~run.liver).sum()), "predicted_liver_pixels": run.predicted_off_liver}
    out["training_slices"] = {k: len(v) for k, v in training.items()}
    out["calibration_slices"] = len(calibration)
    return out


# ---------------------------------------------------------------- position-matched pairs


class SegmenterView:
    """One series on the segmenter's grid (``to_model_grid``'s steps) with modified slices on demand.

    The intensity shift and crop box come from the unmodified series, as for ``SeriesView``: a
    transplant changes a few thousand voxels of millions; ``modified_parity`` measures the effect.
    """

    def __init__(self, case: Case, segmenter: LiverSegmenter, chunk: int = 64) -> None:
        self.case, self.config = case, segmenter.config
        pre = self.config.preprocess
        hu = torch.as_tensor(case.hu, dtype=torch.float32)
        self.shift = intensity_shift(hu, pre)
        self.box = grid_box(hu, case.spacing, pre)
        self.positions = torch.as_tensor(case.positions_mm, dtype=torch.float64)
        self.planes = torch.cat([self._planes(hu[s : s + chunk]) for s in range(0, hu.shape[0], chunk)])

    def _planes(self, block: torch.Tensor) -> torch.Tensor:
        pre = self.config.preprocess
        block = block.clamp_min(AIR_HU - self.shift)
        small = resample_to_box(block, self.box, fill=AIR_HU - self.shift) + self.shift
        return window(small, pre.level, pre.width)

    def images(self, indices: list[int], replaced: dict[int, np.ndarray] | None = None) -> torch.Tensor:
        """(N, C, S, S) model inputs for centre slices ``indices``; ``replaced``: slice -> modified HU."""
        planes = self.planes
        if replaced:
            planes = planes.clone()
            keys = sorted(replaced)
            planes[keys] = self._planes(torch.as_tensor(np.stack([replaced[k] for k in keys]), dtype=torch.float32))
        c, pre = self.config.context, self.config.preprocess
        offsets = torch.arange(-c, c + 1, dtype=torch.float64) * pre.neighbour_mm
        query = (self.positions[torch.as_tensor(indices)][:, None] + offsets[None]).reshape(-1)
        stack = interpolate_along_z(planes, self.positions.float(), query.float())
        return stack.reshape(len(indices), self.config.in_channels, pre.size, pre.size)

    def parity(self, indices: list[int]) -> float:
        """Max |difference| to ``to_model_grid`` on unmodified slices (must be ~0)."""
        ref, _ = to_model_grid(self.case.hu, self.case.spacing, self.case.positions_mm, self.config)
        return float((self.images(indices) - ref[indices]).abs().max())

    def modified_parity(self, edit: Edit) -> float:
        """Max |difference| to ``to_model_grid`` of the whole modified series, at the edit's centre slice."""
        hu = self.case.hu.copy()
        for k, s in edit.slices(self.case).items():
            hu[k] = s
        ref, _ = to_model_grid(hu, self.case.spacing, self.case.positions_mm, self.config)
        return float((self.images([edit.index], edit.slices(self.case)) - ref[[edit.index]]).abs().max())


@torch.inference_mode()
def segment_images(segmenter: LiverSegmenter, images: torch.Tensor, box: Any, batch: int = 32) -> np.ndarray:
    """(N, C, S, S) model inputs -> (N, rows, columns) uint8 masks on the series grid (as ``segment_mask``)."""
    segmenter.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    out = []
    for s in range(0, images.shape[0], batch):
        x = images[s : s + batch].contiguous(memory_format=torch.channels_last)
        prob = torch.sigmoid(segmenter(x)[:, 0].float())
        out.append(mask_on_series_grid(prob, box, segmenter.config.threshold).numpy())
    return np.concatenate(out) if out else np.zeros((0, box.rows, box.columns), dtype=np.uint8)


def pair_arrays(
    edits: list[Edit],
    recipient: Case,
    recipient_run: SeriesRun,
    scorer: torch.nn.Module,
    scorer_md: dict,
    segmenter: LiverSegmenter,
    fast: bool,
) -> dict[str, Any]:
    """Scores and Dice of every pair, unmodified and modified, each through the same code path."""
    preprocess, _ = configs_from_metadata(scorer_md)
    sview, gview = SeriesView(recipient, preprocess), SegmenterView(recipient, segmenter)
    idx = [e.index for e in edits]
    parity = {"scorer_view": sview.check_parity(idx[:8]), "segmenter_view": gview.parity(idx[:8])}
    parity["segmenter_view_modified"] = gview.modified_parity(edits[0])
    base_x, base_v = sview.images(idx)
    mod = [sview.images([e.index], e.slices(recipient)) for e in edits]
    x = torch.cat([base_x, *[m[0] for m in mod]])
    v = torch.cat([base_v, *[m[1] for m in mod]])
    pos = torch.as_tensor(np.r_[recipient_run.positions[idx], recipient_run.positions[idx]], dtype=torch.float32)
    n = len(edits)
    seg_x = torch.cat([gview.images(idx), *[gview.images([e.index], e.slices(recipient)) for e in edits]])
    masks = segment_images(segmenter, seg_x, gview.box)
    roi = roi_of(scorer_md)
    if roi is not None:  # each side scored inside its own predicted liver, as the worker would
        v = v & roi_from_fraction(roi, sview.mask_fraction(fill_holes(masks)), preprocess)
    scores = predict_slices(scorer, x, pos, v, batch_size=64, fast=fast).slice_scores.numpy().astype(np.float64)
    parity["scorer_vs_score_volume"] = float(np.max(np.abs(scores[:n] - recipient_run.scores[idx])))
    parity["segmenter_vs_segment_mask_pixels"] = int(np.sum(masks[:n] != recipient_run.mask[idx]))
    truth_base = recipient.liver[idx]
    truth_mod = truth_base | np.stack([e.full_region(recipient) for e in edits])  # the lesion counts as liver
    return {
        "base_score": scores[:n],
        "mod_score": scores[n:],
        "base_dice": dice(masks[:n], truth_base, axis=(1, 2)),
        "mod_dice": dice(masks[n:], truth_mod, axis=(1, 2)),
        "lesion_outside_liver_pixels": int(np.sum(truth_mod & ~truth_base)),
        "diameter_mm": np.array([e.info["diameter_mm"] for e in edits]),
        "bin": np.array([e.info["bin"] for e in edits]),
        "tumour": np.array([e.info["component"] for e in edits]),
        "recipient_slice": np.array(idx),
        "parity": parity,
    }


def pair_metrics(p: dict[str, Any], threshold: float, cfg: GateConfig) -> dict[str, Any]:
    """Did the lesion make the segmenter fail, and does the score (or its change) predict it?"""
    base_fail, mod_fail = p["base_dice"] < cfg.failure_dice, p["mod_dice"] < cfg.failure_dice
    drop = p["base_dice"] - p["mod_dice"]
    lesion_fail = (mod_fail & ~base_fail) | (drop >= cfg.drop_margin)
    diff = p["mod_score"] - p["base_score"]
    accepted = p["mod_score"] <= threshold
    n = len(diff)
    pooled_scores = np.r_[p["base_score"], p["mod_score"]]
    pooled_fail = np.r_[base_fail, mod_fail]
    by_bin = {}
    edges = cfg.pairs.diameter_edges_mm
    for b in [diameter_bin(d, edges) for d in (0.0, *edges)]:  # small to large
        if not np.any(p["bin"] == b):
            continue
        sel = p["bin"] == b
        by_bin[b] = {"n": int(sel.sum()), "lesion_failures": int(lesion_fail[sel].sum()),
                     "dice_drop_median": float(np.median(drop[sel])), "dice_drop_max": float(np.max(drop[sel])),
                     "auroc_score_change": auroc(diff[sel], lesion_fail[sel])}  # fmt: skip
    return {
        "n_pairs": n,
        "n_tumours": int(len(set(p["tumour"]))),
        "base_failures": int(base_fail.sum()),
        "mod_failures": int(mod_fail.sum()),
        "lesion_failures": int(lesion_fail.sum()),
        "dice_base_median": float(np.median(p["base_dice"])) if n else None,
        "dice_mod_median": float(np.median(p["mod_dice"])) if n else None,
        "dice_drop_median": float(np.median(drop)) if n else None,
        "dice_drop_p95": float(np.percentile(drop, 95)) if n else None,
        "dice_drop_max": float(np.max(drop)) if n else None,
        "score_rose": float(np.mean(diff > 0)) if n else None,
        "auroc_score_change_for_lesion_failure": auroc(diff, lesion_fail),
        "auroc_score_change_ci95": bootstrap_auroc_ci(diff, lesion_fail, p["tumour"], cfg.n_boot)
        if 0 < lesion_fail.sum() < n
        else None,
        "auroc_mod_score_for_lesion_failure": auroc(p["mod_score"], lesion_fail),
        "auroc_score_for_failure_pooled": auroc(pooled_scores, pooled_fail),
        "gate": {
            "mod_accepted": float(np.mean(accepted)) if n else None,
            "base_accepted": float(np.mean(p["base_score"] <= threshold)) if n else None,
            "failures_among_accepted_mod": int(np.sum(mod_fail & accepted)),
            "risk_accepted_mod": float(np.mean(mod_fail[accepted])) if accepted.any() else None,
            "lesion_failures_rejected": float(np.mean(~accepted[lesion_fail])) if lesion_fail.any() else None,
        },
        "by_diameter": by_bin,
        "lesion_outside_liver_pixels": p["lesion_outside_liver_pixels"],
        "parity": p["parity"],
    }


# ---------------------------------------------------------------- entry point


def thresholds_of(metadata: dict, path: Path) -> tuple[float, float | None]:
    calibration = metadata.get("calibration") or {}
    if "threshold" not in calibration:
        raise ValueError(
            f"{path}: the scorer is uncalibrated, so the worker would send every series to the manual queue; "
            "calibrate it first (workers.training.scorer_training.calibrate_checkpoint)"
        )
    return float(calibration["threshold"]), calibration.get("series_threshold")


def evaluate_gate(
    scorer_path: Path, segmenter_path: Path, data_dir: Path, out_dir: Path, config: GateConfig | None = None
) -> dict[str, Any]:
    """Run the held-out patient, the same-patient check and the lesion pairs; write the report to ``out_dir``."""
    from workers.evaluation.gate_report import write_report

    t0 = time.perf_counter()
    cfg = config or GateConfig()
    scorer, scorer_md = load_scorer(scorer_path)
    segmenter, segmenter_md = load_segmenter(segmenter_path)
    threshold, series_threshold = thresholds_of(scorer_md, scorer_path)
    cases = {name: load_case(data_dir, name) for name in (cfg.heldout, cfg.same_patient)}
    runs = {name: run_series(c, scorer, scorer_md, segmenter, cfg.fast) for name, c in cases.items()}
    log.info("scored and segmented %s in %.0f s", list(runs), time.perf_counter() - t0)
    metrics: dict[str, Any] = {"series": {}, "slices": {}}
    for name, run in runs.items():
        z = len(run.scores)
        calibration = case_slices(scorer_md["config"]["data"]["heldout"], name, z)
        training = {
            "scorer": case_slices(scorer_md["config"]["data"]["train"], name, z),
            "segmenter": case_slices(segmenter_md["config"]["data"]["train"], name, z),
        }
        metrics["slices"][name] = series_metrics(run, threshold, cfg, calibration, training)
        metrics["series"][name] = series_decision(run, series_threshold)
    donor, recipient = cases[cfg.pairs.donor], cases[cfg.pairs.recipient]
    z_r = recipient.hu.shape[0]
    rec_normal = [k for k in indices_of(cfg.pairs.recipient_normal) if SLAB <= k < z_r - SLAB]
    edits = make_lesion_edits(donor, recipient, cfg.pairs.donor_tumour, rec_normal,
                              cfg.pairs.position_tolerance_mm, cfg.max_pairs, cfg.pairs, "lesion")  # fmt: skip
    pairs = pair_arrays(edits, recipient, runs[recipient.name], scorer, scorer_md, segmenter, cfg.fast)
    metrics["pairs"] = pair_metrics(pairs, threshold, cfg)
    metrics["models"] = {
        "scorer": {"path": str(scorer_path), "detector": scorer_md["config"].get("detector", "fanogan"),
                   "phase": scorer_md.get("phase"), "gan_step": scorer_md.get("gan_step"),
                   "encoder_step": scorer_md.get("encoder_step"), "threshold": threshold,
                   "series_threshold": series_threshold,
                   "target_fpr": scorer_md["calibration"].get("target_fpr")},
        "segmenter": {"path": str(segmenter_path), "step": segmenter_md.get("step"),
                      "sha256": segmenter_md.get("sha256"), "threshold": segmenter.config.threshold},
    }  # fmt: skip
    metrics["segmenter_grid"] = {"context": segmenter.config.context,
                                 "neighbour_mm": segmenter.config.preprocess.neighbour_mm}  # fmt: skip
    metrics["config"] = asdict(cfg)
    metrics["runtime_s"] = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(metrics, runs, pairs, cfg, out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    return metrics


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")

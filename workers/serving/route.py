"""Score a loaded series with its pinned models (``assess``: the I/O), then ``decide`` (none).

Fail-safe: no pinned scorer, a missing or corrupt file, a load failure, a scorer calibrated inside
another segmenter's liver, an uncalibrated scorer or a liver that is not found all send the series
to the manual queue. Nothing is auto-accepted without a working, calibrated scorer, nor with a mask that
stops short of the liver's end (``models.liver_ends``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.config import Settings
from app.db.states import DecisionReason, Route
from app.db.tables import ModelVersion
from app.dicom.volume import SeriesVolume
from app.services import routing
from app.services.evidence import save_evidence, save_risk
from app.services.routing import Claimed, Decision
from models.body_position import find_body_position
from models.liver_ends import OpenEnd, continuation_cm2, open_ends
from models.risk import FailureRisk
from workers.inference.liver_roi import LiverRoi, roi_of
from workers.inference.quality import density_of, passes_of, segment_with_quality
from workers.inference.scorer import VolumeScores, score_volume
from workers.inference.segmenter import segment_volume
from workers.serving.input_checks import liver_doubt
from workers.serving.model_cache import load_version

log = logging.getLogger(__name__)


@dataclass
class Assessment:
    """What scoring found: a refusal reason before any score, or the scores and where the evidence is."""

    scorer_key: str = "none"
    scorer_version_id: int | None = None
    refused: DecisionReason | None = None
    scores: VolumeScores | None = None
    threshold: float | None = None
    evidence_path: str | None = None
    top_slices: list[int] | None = None
    liver_mask: np.ndarray | None = None
    risk: FusedRisk | None = None  # the second signal, when the segmenter carries a failure-risk model
    detail: str | None = None  # with ``refused``: the segmenter's liver says the gate cannot judge the input
    open_ends: list[OpenEnd] | None = None  # ends of the mask past which liver-like tissue goes on


@dataclass
class FusedRisk:
    """Per-slice failure risk of the segmentation (``models.risk``) and where the gate looks at it."""

    slice_risk: np.ndarray  # (Z,) in (0, 1)
    threshold: float | None  # accept a slice at or below it (conformal risk control); None: accept none
    core: np.ndarray  # (Z,) bool: the middle of the predicted liver (models.quality fraction in [0.2, 0.8])

    def flagged(self) -> np.ndarray:
        """Slices of the predicted core over the threshold (all of the core when there is no threshold)."""
        if self.threshold is None:
            return self.core.copy()
        return self.core & (self.slice_risk > self.threshold)


CORE = (0.2, 0.8)  # the liver's core, as the failure definition's (workers.evaluation.failure_metrics)


def risk_model_of(segmenter_metadata: dict[str, Any], scorer_sha256: str) -> FailureRisk | None:
    """The segmenter's failure-risk model, if it was fit with this scorer's anomaly score (else None)."""
    fitted = segmenter_metadata.get("failure_risk")
    if not fitted:
        return None
    model = FailureRisk.from_json(fitted)
    if "anomaly" in model.features and model.fitted_on.get("scorer_sha256") != scorer_sha256:
        return None  # its anomaly coefficient means another scorer's scale
    return model


def _load(settings: Settings, row: ModelVersion, series_id: int) -> tuple[Any, dict[str, Any]] | None:
    """(model, metadata), or None after recording why."""
    try:
        return load_version(settings.models_dir, row)
    except Exception as exc:  # noqa: BLE001 - any load failure is the fail-safe path
        log.error("%s v%d unusable for series %d: %s", row.kind, row.version, series_id, type(exc).__name__)
        routing.record_model_unusable(row, type(exc).__name__)
        return None


def assess(settings: Settings, claimed: Claimed, volume: SeriesVolume) -> Assessment:
    """Load the pinned scorer (and, for a liver-restricted one, segment first with the pinned segmenter:
    the mask is reused if the series is accepted), score, and write the evidence file."""
    a = claimed.attempt
    row = claimed.scorer
    if row is None:
        return Assessment(refused=DecisionReason.NO_SCORER)
    key = f"{row.id}:{row.sha256[:16]}"
    loaded = _load(settings, row, a.series_id)
    if loaded is None:
        return Assessment(key, row.id, refused=DecisionReason.SCORER_UNAVAILABLE)
    model, metadata = loaded
    g = volume.geometry
    liver, risk_model, body = None, None, None
    ends: list[OpenEnd] = []
    roi = roi_of(metadata)
    if roi is None and metadata.get("kind") == "patch-scorer":
        # a patch scorer always looks inside the liver; before calibration it has no region recorded yet, and
        # then it still scores (its missing threshold sends the series to a radiologist: scorer_uncalibrated)
        roi = LiverRoi(reference_masks=True)
    if roi is not None:
        seg_row = claimed.segmenter
        if seg_row is None or not roi.calibrated_for(seg_row.sha256):
            # its threshold was calibrated inside another segmenter's liver: not calibrated for this one
            return Assessment(key, row.id, refused=DecisionReason.SCORER_UNCALIBRATED_FOR_SEGMENTER)
        seg_loaded = _load(settings, seg_row, a.series_id)
        if seg_loaded is None:
            return Assessment(key, row.id, refused=DecisionReason.SEGMENTER_UNAVAILABLE)
        risk_model = risk_model_of(seg_loaded[1], row.sha256)
        if risk_model is not None:
            # the passes this risk model was fitted with: its threshold holds for that signal only
            passes = passes_of(risk_model.fitted_on)
            quality = segment_with_quality(seg_loaded[0], volume.hu, g.pixel_spacing_mm, g.slice_positions_mm,
                                           density=density_of(seg_loaded[1]), **passes)  # fmt: skip
            liver = quality.mask
        else:
            liver = segment_volume(seg_loaded[0], volume.hu, g)
        # computed once: the coverage check and a patch scorer both need it (about 0.2 s on 129 slices)
        body = find_body_position(volume.hu, g.pixel_spacing_mm, g.slice_positions_mm)
        doubt = liver_doubt(settings, volume, liver, metadata, seg_loaded[1], series_id=a.series_id, body=body)
        if doubt is not None:  # before any score: the input is one the gate cannot judge (workers.serving.input_checks)
            return Assessment(key, row.id, refused=doubt[0], liver_mask=liver, detail=doubt[1])
        # where every pass agrees on nothing, the risk cannot see a miss: does liver go on past the mask's ends?
        beyond = (quality.signals["continuation_cm2"] if risk_model is not None
                  else continuation_cm2(volume.hu, liver, g.pixel_spacing_mm, g.slice_positions_mm))  # fmt: skip
        ends = open_ends(beyond, liver.reshape(len(liver), -1).any(1), g.slice_positions_mm)
    # fast path: channels_last + bf16 where the CPU has it (parity with fp32 tested in tests/models)
    scores = score_volume(model, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, metadata, fast=True,
                          liver=liver, body=body)  # fmt: skip
    # The series score (mean of the top-k slices) is compared with a series-level threshold only:
    # the slice threshold would flag most normal series (their top slices sit above it by construction).
    threshold = (metadata.get("calibration") or {}).get("series_threshold")
    relative = f"evidence/{a.series_id}-r{a.revision}-m{row.id}.npz"
    top = save_evidence(settings.storage_dir / relative, slice_scores=scores.slice_scores, heatmaps=scores.heatmaps,
                        positions_mm=g.slice_positions_mm, threshold=threshold,
                        heatmap_box=scores.heatmap_box)  # fmt: skip
    found = Assessment(key, row.id, None, scores, threshold, relative, top, liver)
    found.open_ends = ends if liver is not None else None
    if risk_model is not None:
        anomaly = np.nan_to_num(np.asarray(scores.slice_scores, np.float64), nan=0.0)  # as it was fit (failure_eval)
        slice_risk = risk_model.predict({**quality.signals, "anomaly": anomaly})
        fraction = quality.signals["fraction"]
        found.risk = FusedRisk(slice_risk, risk_model.threshold, (fraction >= CORE[0]) & (fraction <= CORE[1]))
        save_risk(settings.storage_dir / relative, slice_risk=slice_risk, threshold=risk_model.threshold,
                  flagged=found.risk.flagged())  # fmt: skip
    return found


def decide(found: Assessment) -> Decision:
    """Auto only for a calibrated score at or below its series threshold, over a liver that was found, with no
    core slice over the risk threshold and no open end of the mask."""
    if found.refused is not None or found.scores is None:
        reason = found.refused or DecisionReason.SCORER_UNAVAILABLE
        return Decision(Route.MANUAL, reason, scorer_key=found.scorer_key, scorer_version_id=found.scorer_version_id)
    scores = found.scores
    d = Decision(Route.MANUAL, DecisionReason.ANOMALOUS, found.scorer_key, found.scorer_version_id,
                 float(scores.series_score), found.threshold, [float(s) for s in np.asarray(scores.slice_scores)],
                 found.evidence_path, list(found.top_slices or []), found.liver_mask)  # fmt: skip
    if found.threshold is None:
        d.reason = DecisionReason.SCORER_UNCALIBRATED
    elif scores.region_pixels == 0:  # the segmenter found no liver to look at: a score of 0 would be fail-open
        d.reason = DecisionReason.NO_LIVER_FOUND
    elif not scores.series_score <= found.threshold:  # above it, or NaN: the first signal flagged it
        d.detail = (
            f"anomaly: series score {scores.series_score:.3f} over its threshold {found.threshold:.3f} "
            f"(x{scores.series_score / max(found.threshold, 1e-9):.2f}); top slices {d.top_slices}"
        )
    elif found.risk is not None and found.risk.flagged().any():
        # the second signal: the segmenter is likely to fail on these slices of the liver's core
        flagged = np.flatnonzero(found.risk.flagged())
        d.reason = DecisionReason.SEGMENTATION_RISK
        d.top_slices = [int(i) for i in flagged[np.argsort(-found.risk.slice_risk[flagged])][:10]]
        worst, limit = float(found.risk.slice_risk[d.top_slices[0]]), found.risk.threshold
        over = "no threshold: every core slice" if limit is None else f"threshold {limit:.3f}"
        ratio = "" if limit is None else f", x{worst / max(limit, 1e-9):.1f}"
        d.detail = (
            f"segmentation risk: {len(flagged)} slices of the liver's core over the {over} "
            f"(worst {worst:.3f}{ratio}); slices {sorted(d.top_slices)}"
        )
    elif found.open_ends:
        # liver-like tissue goes on past an end of the mask: slices it left out, which no risk can see
        d.reason = DecisionReason.LIVER_BEYOND_MASK
        d.top_slices = [z for end in found.open_ends for z in end.slices][:10]
        d.detail = "; ".join(end.describe() for end in found.open_ends)
    else:
        d.route, d.reason = Route.AUTO, DecisionReason.IN_DISTRIBUTION
    return d

"""Score a loaded series with its pinned scorer and decide: auto-segmentation or the manual queue.

Fail-safe: no promoted scorer, a missing or corrupt file, a load failure or an
uncalibrated scorer all send the series to the manual queue. Nothing is
auto-accepted without a working, calibrated scorer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from app.core.config import Settings
from app.core.db import session_scope
from app.db.tables import ModelVersion
from app.services import audit
from workers.pipelines.evidence import save_evidence
from workers.pipelines.liver_roi import roi_of
from workers.pipelines.model_cache import load_version
from workers.pipelines.volume import SeriesVolume

log = logging.getLogger(__name__)


@dataclass
class Decision:
    decision: str  # auto | manual
    reason: str
    scorer_key: str = "none"
    scorer_version_id: int | None = None
    series_score: float | None = None
    threshold: float | None = None
    slice_scores: list[float] | None = None
    evidence_path: str | None = None
    top_slices: list[int] = field(default_factory=list)
    liver_mask: np.ndarray | None = field(default=None, repr=False)  # the segmenter's mask, when scoring used it

    @property
    def priority(self) -> float:
        """Queue priority: the higher the anomaly, the sooner; a case without a usable score goes first.

        Only an anomalous decision's score ranks it: the score of an uncalibrated scorer, or of a liver
        the segmenter did not find (no_liver_found scores 0), says nothing about the series."""
        if self.reason != "anomalous" or self.series_score is None:
            return math.inf
        return float(self.series_score)


def _pinned(version_id: int | None) -> ModelVersion | None:
    if version_id is None:
        return None
    with session_scope() as session:
        return session.get(ModelVersion, version_id)


def _load(settings: Settings, row: ModelVersion, series_id: int) -> tuple | None:
    """(model, metadata), or None after recording why (readiness reads it and reports 503)."""
    try:
        return load_version(settings.models_dir, row)
    except Exception as exc:  # noqa: BLE001 - any load failure is the fail-safe path
        log.error("%s v%d unusable for series %d: %s", row.kind, row.version, series_id, type(exc).__name__)
        with session_scope() as session:
            audit.record(session, actor="worker", action="model.load_failed", entity_type="model",
                         entity_id=row.id, error=type(exc).__name__)  # fmt: skip
        return None


def decide(
    settings: Settings,
    *,
    series_id: int,
    revision: int,
    scorer_id: int | None,
    volume: SeriesVolume,
    segmenter_id: int | None = None,
) -> Decision:
    row = _pinned(scorer_id)
    if row is None:
        return Decision("manual", "no_scorer")
    key = f"{row.id}:{row.sha256[:16]}"
    loaded = _load(settings, row, series_id)
    if loaded is None:
        return Decision("manual", "scorer_unavailable", scorer_key=key, scorer_version_id=row.id)
    model, metadata = loaded
    from workers.pipelines.scorer_inference import score_volume

    g = volume.geometry
    liver = None
    roi = roi_of(metadata)
    if roi is not None:  # this scorer looks inside the liver: segment first (the mask is reused if accepted)
        seg_row = _pinned(segmenter_id)
        if seg_row is None or seg_row.sha256 != roi.segmenter_sha256:
            # its threshold was calibrated inside another segmenter's liver: not calibrated for this one
            return Decision("manual", "scorer_uncalibrated_for_segmenter", scorer_key=key, scorer_version_id=row.id)
        seg_loaded = _load(settings, seg_row, series_id)
        if seg_loaded is None:
            return Decision("manual", "segmenter_unavailable", scorer_key=key, scorer_version_id=row.id)
        from workers.pipelines.segmenter_inference import segment_volume

        liver = segment_volume(seg_loaded[0], volume.hu, g)
    # fast path: channels_last + bf16 where the CPU has it (parity with fp32 tested in tests/models)
    scores = score_volume(model, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, metadata, fast=True,
                          liver=liver)  # fmt: skip
    # The series score (mean of the top-k slices) is compared with a series-level threshold only:
    # the slice threshold would flag most normal series (their top slices sit above it by construction).
    threshold = (metadata.get("calibration") or {}).get("series_threshold")
    relative = f"evidence/{series_id}-r{revision}-m{row.id}.npz"
    top = save_evidence(settings.storage_dir / relative, slice_scores=scores.slice_scores, heatmaps=scores.heatmaps,
                        positions_mm=g.slice_positions_mm, threshold=threshold)  # fmt: skip
    common = dict(scorer_key=key, scorer_version_id=row.id, series_score=float(scores.series_score),
                  threshold=threshold, slice_scores=[float(s) for s in np.asarray(scores.slice_scores)],
                  evidence_path=relative, top_slices=top, liver_mask=liver)  # fmt: skip
    if threshold is None:
        return Decision("manual", "scorer_uncalibrated", **common)  # type: ignore[arg-type]
    if scores.region_pixels == 0:  # the segmenter found no liver to look at: a score of 0 would be fail-open
        return Decision("manual", "no_liver_found", **common)  # type: ignore[arg-type]
    if scores.series_score > threshold:
        return Decision("manual", "anomalous", **common)  # type: ignore[arg-type]
    return Decision("auto", "in_distribution", **common)  # type: ignore[arg-type]

"""The series pipeline: claim, load the volume, score, decide, then segment or queue for a radiologist.

Idempotent and fenced: the claim is a compare-and-set that increments the attempt number, and only
the holder of that attempt may record results (``app.services.routing`` re-checks it under a row
lock at every step). A series over the attempt cap ends FAILED and goes to the manual queue
instead of looping.

Only transient errors (the disk, the database, memory) are retried: the same data would fail the same
way again, so any other error fails the series at once into a radiologist's case, with the primary
stack's geometry so that it can be contoured. A volume the gate cannot judge (a missing slice, two
images at one position, no clear primary stack, not CT in HU) goes to a radiologist before any model runs; one
whose segmented liver the gate cannot judge (where the coverage holds none, too little, cut by the field of view)
before anything is scored (``workers.serving.input_checks``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import InterfaceError, OperationalError

from app.core.config import Settings, get_settings
from app.db.states import DecisionReason, Route
from app.dicom.volume import SeriesGeometryError, SeriesVolume, load_series_volume, read_geometry
from app.services import routing
from app.services.routing import Claimed, Decision
from app.services.storage import InstanceStore
from workers.serving.input_checks import volume_doubt
from workers.serving.route import assess, decide
from workers.serving.segment import segment_series

log = logging.getLogger(__name__)
# Worth another attempt: the next one may find the disk, the database, the memory or the time back.
TRANSIENT = (OSError, MemoryError, OperationalError, InterfaceError, SoftTimeLimitExceeded)


def _geometry_or_none(claimed: Claimed) -> dict | None:
    """The primary stack's geometry from the headers, for the case of a series whose pixels failed."""
    try:
        return read_geometry([claimed.paths[uid] for uid in sorted(claimed.paths)]).as_json()
    except Exception:  # noqa: BLE001 - without geometry the case still opens; it cannot be contoured
        return None


def _failed(claimed: Claimed, exc: Exception, where: str, geometry: dict | None) -> str:
    """Retry a transient error (up to the attempt cap); fail any other at once (no PHI: the type only)."""
    a = claimed.attempt
    log.warning("series %d attempt %d failed %s: %s", a.series_id, a.number, where, type(exc).__name__)
    if isinstance(exc, TRANSIENT):
        routing.retry_later(a, f"error {where}: {type(exc).__name__}")
        return "retry"
    routing.fail(a, f"error {where}: {type(exc).__name__} (not retried: the same data fails the same way)",
                 geometry=geometry if geometry is not None else _geometry_or_none(claimed))  # fmt: skip
    return "failed"


def _auto(settings: Settings, claimed: Claimed, volume: SeriesVolume, mask: np.ndarray | None) -> str:
    a, row = claimed.attempt, claimed.segmenter
    geometry = volume.geometry.as_json()
    if row is None:
        done = routing.to_manual(a, reason=DecisionReason.NO_SEGMENTER, priority=routing.FIRST, geometry=geometry)
        return "manual" if done else "fenced"
    store = InstanceStore(settings.storage_dir, fsync=settings.fsync)
    t0 = time.perf_counter()
    seg = segment_series(settings, store, row=row, volume=volume, paths_by_uid=claimed.paths, series_id=a.series_id,
                         revision=a.revision, mask=mask)  # fmt: skip
    seg.duration_s = time.perf_counter() - t0
    # the SEG's delivery to the PACS is written in the same transaction (app.services.delivery sends it)
    if not routing.record_auto(settings, a, study_id=claimed.study_id, segmenter_id=row.id, seg=seg,
                               geometry=geometry):  # fmt: skip
        if seg.seg_path:
            store.remove(seg.seg_path)
        return "fenced"
    return "auto"


def score_series_impl(*, series_id: int, revision: int, task_id: str) -> str:
    settings = get_settings()
    claimed = routing.claim(settings, series_id=series_id, revision=revision, task_id=task_id)
    if claimed is None:
        return "skipped"  # stale revision, already done, or held by a live worker
    a = claimed.attempt
    if claimed.exhausted:
        routing.fail(a, f"gave up after {settings.max_attempts} attempts", geometry=_geometry_or_none(claimed))
        return "failed"
    log.info("series %d revision %d attempt %d", series_id, revision, a.number)
    t0 = time.perf_counter()
    try:
        volume = load_series_volume([claimed.paths[uid] for uid in sorted(claimed.paths)])
    except SeriesGeometryError as exc:
        routing.fail(a, f"volume: {exc}", geometry=_geometry_or_none(claimed))  # the data will not change
        return "failed"
    except Exception as exc:  # noqa: BLE001 - transient: retried; any other: failed at once
        return _failed(claimed, exc, "loading the volume", None)
    geometry = volume.geometry.as_json()
    try:
        doubt = volume_doubt(volume)
        if doubt is not None:  # before any model: the gate cannot judge this volume (geometry, not CT in HU)
            return _cannot_judge(claimed, doubt[0], doubt[1], geometry)
        t1 = time.perf_counter()
        found = assess(settings, claimed, volume)
        if found.refused is not None and found.detail is not None:  # the segmenter's liver: before any score
            return _cannot_judge(claimed, found.refused, found.detail, geometry)
        d = decide(found)
        d.scoring_s = time.perf_counter() - t1
        segmenter_id = claimed.segmenter.id if claimed.segmenter else None
        if not routing.record_decision(a, d, segmenter_id):
            return "fenced"
        log.info("series %d decided %s: volume %.2f s, scoring %.2f s", series_id, d.route, t1 - t0,
                 time.perf_counter() - t1)  # fmt: skip
        if d.route == Route.MANUAL:
            done = routing.to_manual(a, reason=d.reason, priority=d.priority, geometry=geometry, detail=d.detail)
            return "manual" if done else "fenced"
        return _auto(settings, claimed, volume, d.liver_mask)
    except Exception as exc:  # noqa: BLE001 - transient: retried; any other: failed at once
        return _failed(claimed, exc, "in routing", geometry)


def _cannot_judge(claimed: Claimed, reason: DecisionReason, detail: str, geometry: dict) -> str:
    a = claimed.attempt
    d = Decision(Route.MANUAL, reason)
    if not routing.record_decision(a, d, claimed.segmenter.id if claimed.segmenter else None):
        return "fenced"
    log.info("series %d revision %d: not judged (%s)", a.series_id, a.revision, reason)
    done = routing.to_manual(a, reason=reason, priority=d.priority, geometry=geometry, detail=detail)
    return "manual" if done else "fenced"

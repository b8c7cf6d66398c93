"""The series pipeline: claim, load the volume, score, decide, then segment or queue for a radiologist.

Idempotent and fenced: the claim is a compare-and-set that increments the
attempt number, and only the holder of that attempt may record results (each
write re-checks it under a row lock). A series over the attempt cap ends FAILED
and goes to the manual queue instead of looping.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import select

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.db import loop
from app.db import models as registry_q
from app.db import series as q
from app.db.states import SeriesStatus
from app.db.tables import Instance, ModelVersion, Series
from app.services import audit
from app.services.derived import add_derived_instance
from app.services.storage import InstanceStore
from workers.pipelines.route import Decision, decide
from workers.pipelines.segment import segment_series, send_to_destination
from workers.pipelines.volume import SeriesGeometryError, SeriesVolume, load_series_volume

log = logging.getLogger(__name__)
ACTOR = "worker"


def _finish(series_id: int, revision: int, attempt: int, status: SeriesStatus, **values: object) -> bool:
    with session_scope() as session:
        return q.finish_series(session, series_id=series_id, revision=revision, attempt=attempt, status=status,
                               now=datetime.now(UTC), **values)  # fmt: skip


def _fail(series_id: int, revision: int, attempt: int, reason: str) -> None:
    """FAILED, and a manual case: a series the pipeline cannot handle still reaches a radiologist."""
    with session_scope() as session:
        done = q.finish_series(session, series_id=series_id, revision=revision, attempt=attempt,
                               status=SeriesStatus.FAILED, now=datetime.now(UTC), last_error=reason)  # fmt: skip
        if done:
            loop.open_case(session, series_id=series_id, revision=revision, reason="failed", priority=float("inf"))
            audit.record(session, actor=ACTOR, action="series.failed", entity_type="series",
                         entity_id=series_id, revision=revision, attempt=attempt, reason=reason)  # fmt: skip


def _retry_later(series_id: int, revision: int, attempt: int, reason: str) -> None:
    """SCORING -> QUEUED and back into the outbox, so the relay sends it again."""
    with session_scope() as session:
        if q.finish_series(session, series_id=series_id, revision=revision, attempt=attempt,
                           status=SeriesStatus.QUEUED, now=datetime.now(UTC), last_error=reason):  # fmt: skip
            q.republish(session, series_id=series_id, revision=revision)
            audit.record(session, actor=ACTOR, action="series.retry", entity_type="series",
                         entity_id=series_id, revision=revision, attempt=attempt, reason=reason)  # fmt: skip


def _claim(settings: Settings, series_id: int, revision: int, task_id: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        scorer = registry_q.promoted(session, "scorer")
        segmenter = registry_q.promoted(session, "segmenter")
        claim = q.claim_series(session, series_id=series_id, revision=revision, task_id=task_id,
                               now=datetime.now(UTC), lease_s=settings.task_time_limit_s + 60,
                               max_attempts=settings.max_attempts, scorer_id=scorer.id if scorer else None,
                               segmenter_id=segmenter.id if segmenter else None)  # fmt: skip
        if claim is not None:  # in the claim's transaction: every run that started is on record
            audit.record(session, actor=ACTOR, action="series.claimed", entity_type="series", entity_id=series_id,
                         revision=revision, attempt=claim.attempt, task_id=task_id, scorer_version_id=claim.scorer_id,
                         segmenter_version_id=claim.segmenter_id)  # fmt: skip
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.storage_path).where(Instance.series_id == series_id)
        ).all()
    return claim, {uid: settings.storage_dir / path for uid, path in rows}


def _record_decision(series_id: int, revision: int, attempt: int, d: Decision, segmenter_id: int | None) -> bool:
    with session_scope() as session:
        if not q.holds(session, series_id=series_id, revision=revision, attempt=attempt):
            return False
        loop.record_decision(session, series_id=series_id, revision=revision, scorer_key=d.scorer_key,
                             scorer_version_id=d.scorer_version_id, segmenter_version_id=segmenter_id,
                             decision=d.decision, reason=d.reason, series_score=d.series_score,
                             threshold=d.threshold, slice_scores=d.slice_scores,
                             evidence_path=d.evidence_path)  # fmt: skip
        audit.record(session, actor=ACTOR, action="series.decided", entity_type="series", entity_id=series_id,
                     revision=revision, decision=d.decision, reason=d.reason, scorer_version_id=d.scorer_version_id,
                     segmenter_version_id=segmenter_id, series_score=d.series_score, threshold=d.threshold)  # fmt: skip
        return True


def _to_manual(series_id: int, revision: int, attempt: int, reason: str, priority: float, volume: SeriesVolume) -> str:
    with session_scope() as session:
        if not q.finish_series(session, series_id=series_id, revision=revision, attempt=attempt,
                               status=SeriesStatus.MANUAL, now=datetime.now(UTC),
                               geometry=volume.geometry.as_json(), last_error=None):  # fmt: skip
            return "fenced"
        loop.open_case(session, series_id=series_id, revision=revision, reason=reason, priority=priority)
        audit.record(session, actor=ACTOR, action="case.opened", entity_type="series", entity_id=series_id,
                     revision=revision, reason=reason)  # fmt: skip
    return "manual"


def _auto(settings: Settings, series_id: int, revision: int, attempt: int, segmenter_id: int | None,
          volume: SeriesVolume, paths: dict[str, Path], mask: np.ndarray | None = None) -> str:  # fmt: skip
    with session_scope() as session:
        row = session.get(ModelVersion, segmenter_id) if segmenter_id else None
        study_id = session.scalar(select(Series.study_id).where(Series.id == series_id))
    assert study_id is not None  # series.study_id is NOT NULL and the claim holds the series
    if row is None:
        return _to_manual(series_id, revision, attempt, "no_segmenter", float("inf"), volume)
    store = InstanceStore(settings.storage_dir, fsync=settings.fsync)
    seg = segment_series(settings, store, row=row, volume=volume, paths_by_uid=paths, series_id=series_id,
                         revision=revision, mask=mask)  # fmt: skip
    with session_scope() as session:
        if not q.holds(session, series_id=series_id, revision=revision, attempt=attempt):
            if seg.seg_path:
                store.remove(seg.seg_path)
            return "fenced"
        if seg.seg_path and seg.seg_series_uid and seg.seg_sop_uid:
            add_derived_instance(session, study_id=study_id, series_uid=seg.seg_series_uid, sop_uid=seg.seg_sop_uid,
                                 sop_class_uid=seg.sop_class_uid, modality="SEG", relative=seg.seg_path,
                                 sha256=seg.sha256, size=seg.size,
                                 transfer_syntax_uid=seg.transfer_syntax_uid)  # fmt: skip
        loop.record_segmentation(session, series_id=series_id, revision=revision, segmenter_version_id=row.id,
                                 source="model", seg_series_uid=seg.seg_series_uid, seg_sop_uid=seg.seg_sop_uid,
                                 seg_path=seg.seg_path, nifti_path=seg.nifti_path)  # fmt: skip
        q.finish_series(session, series_id=series_id, revision=revision, attempt=attempt, status=SeriesStatus.AUTO,
                        now=datetime.now(UTC), geometry=volume.geometry.as_json(), last_error=None)  # fmt: skip
        audit.record(session, actor=ACTOR, action="series.segmented", entity_type="series", entity_id=series_id,
                     revision=revision, segmenter_version_id=row.id, seg_refused=seg.seg_refused)  # fmt: skip
    if seg.blob:
        _send(settings, series_id, seg.blob)
    return "auto"


def _send(settings: Settings, series_id: int, blob: bytes) -> None:
    try:
        code = send_to_destination(settings, blob)
    except Exception as exc:  # noqa: BLE001 - the SEG is stored; sending is best effort, audited
        code = None
        log.warning("sending SEG of series %d failed: %s", series_id, type(exc).__name__)
    if settings.seg_destination_url:
        with session_scope() as session:
            audit.record(session, actor=ACTOR, action="seg.sent", entity_type="series", entity_id=series_id,
                         http_status=code)  # fmt: skip


def score_series_impl(*, series_id: int, revision: int, task_id: str) -> str:
    settings = get_settings()
    claim, paths = _claim(settings, series_id, revision, task_id)
    if claim is None:
        return "skipped"  # stale revision, already done, or held by a live worker
    if claim.exhausted:
        _fail(series_id, revision, claim.attempt, f"gave up after {settings.max_attempts} attempts")
        return "failed"
    log.info("series %d revision %d attempt %d", series_id, revision, claim.attempt)
    t0 = time.perf_counter()
    try:
        volume = load_series_volume([paths[uid] for uid in sorted(paths)])
    except SeriesGeometryError as exc:
        _fail(series_id, revision, claim.attempt, f"volume: {exc}")  # the data will not change: no retry
        return "failed"
    except Exception as exc:  # noqa: BLE001 - recorded as a type name only (no PHI), then retried
        log.warning("series %d attempt %d failed: %s", series_id, claim.attempt, type(exc).__name__)
        _retry_later(series_id, revision, claim.attempt, f"error: {type(exc).__name__}")
        return "retry"
    try:
        t1 = time.perf_counter()
        d = decide(settings, series_id=series_id, revision=revision, scorer_id=claim.scorer_id, volume=volume,
                   segmenter_id=claim.segmenter_id)  # fmt: skip
        if not _record_decision(series_id, revision, claim.attempt, d, claim.segmenter_id):
            return "fenced"
        log.info("series %d decided %s: volume %.2f s, scoring %.2f s", series_id, d.decision, t1 - t0,
                 time.perf_counter() - t1)  # fmt: skip
        if d.decision == "manual":
            return _to_manual(series_id, revision, claim.attempt, d.reason, d.priority, volume)
        return _auto(settings, series_id, revision, claim.attempt, claim.segmenter_id, volume, paths, d.liver_mask)
    except Exception as exc:  # noqa: BLE001 - as above: retried up to the attempt cap
        log.warning("series %d attempt %d failed in routing: %s", series_id, claim.attempt, type(exc).__name__)
        _retry_later(series_id, revision, claim.attempt, f"error: {type(exc).__name__}")
        return "retry"

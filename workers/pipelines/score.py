"""The scoring pipeline: claim the series, load its volume, record the result.

Idempotent and fenced: the claim is a compare-and-set that increments the
attempt number, and only the holder of that attempt may record a result. A
series over the attempt cap ends FAILED instead of looping.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from app.core.config import get_settings
from app.core.db import session_scope
from app.db import reads
from app.db import series as q
from app.db.states import SeriesStatus
from app.services import audit
from workers.pipelines.volume import SeriesGeometryError, load_series_volume

log = logging.getLogger(__name__)
ACTOR = "worker"


def _fail(series_id: int, revision: int, attempt: int, reason: str) -> None:
    with session_scope() as session:
        if q.finish_series(session, series_id=series_id, revision=revision, attempt=attempt,
                           status=SeriesStatus.FAILED, now=datetime.now(UTC), last_error=reason):  # fmt: skip
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


def score_series_impl(*, series_id: int, revision: int, task_id: str) -> str:
    settings = get_settings()
    now = datetime.now(UTC)
    with session_scope() as session:
        claim = q.claim_series(session, series_id=series_id, revision=revision, task_id=task_id, now=now,
                               lease_s=settings.task_time_limit_s + 60, max_attempts=settings.max_attempts)  # fmt: skip
        paths = reads.instance_paths(session, series_id) if claim and not claim.exhausted else []
    if claim is None:
        return "skipped"  # stale revision, already done, or held by a live worker
    if claim.exhausted:
        _fail(series_id, revision, claim.attempt, f"gave up after {settings.max_attempts} attempts")
        return "failed"
    log.info("scoring series %d revision %d attempt %d", series_id, revision, claim.attempt)
    try:
        volume = load_series_volume([settings.storage_dir / p for p in sorted(paths)])
    except SeriesGeometryError as exc:
        _fail(series_id, revision, claim.attempt, f"volume: {exc}")  # the data will not change: no retry
        return "failed"
    except Exception as exc:  # noqa: BLE001 - recorded as a type name only (no PHI), then retried
        log.warning("series %d attempt %d failed: %s", series_id, claim.attempt, type(exc).__name__)
        _retry_later(series_id, revision, claim.attempt, f"error: {type(exc).__name__}")
        return "retry"
    with session_scope() as session:
        done = q.finish_series(session, series_id=series_id, revision=revision, attempt=claim.attempt,
                               status=SeriesStatus.SCORED, now=datetime.now(UTC),
                               geometry=volume.geometry.as_json(), last_error=None)  # fmt: skip
        if done:
            audit.record(session, actor=ACTOR, action="series.scored", entity_type="series", entity_id=series_id,
                         revision=revision, attempt=claim.attempt, n_slices=volume.geometry.n_slices)  # fmt: skip
    return "scored" if done else "fenced"

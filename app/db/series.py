"""SQL for the series life cycle: completion, claims and results, all compare-and-set."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db.rows import affected
from app.db.states import SeriesStatus, TrainingJobStatus, check_transition
from app.db.tables import OutboxEvent, Series, TrainingJob

SCORE_TOPIC = "score"


def _locking(session: Session, stmt: Any) -> Any:
    # SKIP LOCKED lets several API processes share the work without waiting on each other.
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True)
    return stmt


def enqueue_job(session: Session, *, series_id: int, revision: int) -> None:
    """Write the outbox row in the caller's transaction (the one that moved the state)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(OutboxEvent).values(topic=SCORE_TOPIC, series_id=series_id, revision=revision, publish_count=0)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["topic", "series_id", "revision"]))


def since_completion(session: Session, *, series_id: int, revision: int, now: datetime) -> float | None:
    """Seconds since this revision completed (its scoring job's outbox row was written); None without one."""
    stmt = select(OutboxEvent.created_at).where(
        OutboxEvent.topic == SCORE_TOPIC, OutboxEvent.series_id == series_id, OutboxEvent.revision == revision
    )
    created = session.scalar(stmt)
    if created is None:
        return None
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    return max(0.0, (now - created).total_seconds())


def complete_series(session: Session, *, series_id: int, now: datetime, older_than: datetime | None) -> int | None:
    """RECEIVING -> QUEUED (and an outbox row) if nothing arrived since older_than; the revision or None."""
    check_transition(SeriesStatus.RECEIVING, SeriesStatus.QUEUED)
    cond = [Series.id == series_id, Series.status == SeriesStatus.RECEIVING]
    if older_than is not None:
        cond.append(Series.last_instance_at < older_than)
    stmt = (
        update(Series)
        .where(*cond)
        .values(status=SeriesStatus.QUEUED, completed_at=now, updated_at=now, attempts=0)
        .returning(Series.revision)
    )
    revision = session.execute(stmt).scalar_one_or_none()
    if revision is not None:
        enqueue_job(session, series_id=series_id, revision=revision)
    return revision


def stable_series_ids(session: Session, *, older_than: datetime, limit: int = 100) -> list[int]:
    stmt = (
        select(Series.id)
        .where(Series.status == SeriesStatus.RECEIVING, Series.last_instance_at < older_than)
        .order_by(Series.last_instance_at)
        .limit(limit)
    )
    return list(session.scalars(_locking(session, stmt)))


def unpublished_jobs(session: Session, *, limit: int = 100) -> list[OutboxEvent]:
    stmt = select(OutboxEvent).where(OutboxEvent.published_at.is_(None)).order_by(OutboxEvent.id).limit(limit)
    return list(session.scalars(_locking(session, stmt)))


def stale_jobs(session: Session, *, now: datetime, published_before: datetime) -> list[OutboxEvent]:
    """Published jobs whose series nobody picked up, or whose holder's lease ran out."""
    stmt = (
        select(OutboxEvent)
        .join(Series, and_(Series.id == OutboxEvent.series_id, Series.revision == OutboxEvent.revision))
        .where(
            OutboxEvent.published_at.is_not(None),
            or_(
                and_(Series.status == SeriesStatus.QUEUED, OutboxEvent.published_at < published_before),
                and_(Series.status == SeriesStatus.SCORING, Series.lease_until < now),
            ),
        )
        .limit(100)
    )
    return list(session.scalars(_locking(session, stmt)))


def stale_training_jobs(session: Session, *, published_before: datetime) -> list[OutboxEvent]:
    """Training jobs published but still queued (message lost, or no training worker yet)."""
    stmt = (
        select(OutboxEvent)
        .join(TrainingJob, TrainingJob.id == OutboxEvent.training_job_id)
        .where(TrainingJob.status == TrainingJobStatus.QUEUED, OutboxEvent.published_at < published_before)
        .limit(100)
    )
    return list(session.scalars(_locking(session, stmt)))


@dataclass(frozen=True)
class Attempt:
    """One run of one series revision: the fencing token every result is written under."""

    series_id: int
    revision: int
    number: int  # Series.attempts when this run claimed it


@dataclass(frozen=True)
class Claim:
    attempt: int  # the fencing token: only the holder of this attempt may finish
    exhausted: bool  # over the attempt cap: the caller must fail the series
    scorer_id: int | None = None  # pinned model versions
    segmenter_id: int | None = None


def claim_series(
    session: Session,
    *,
    series_id: int,
    revision: int,
    task_id: str,
    now: datetime,
    lease_s: float,
    max_attempts: int,
    scorer_id: int | None = None,
    segmenter_id: int | None = None,
) -> Claim | None:
    """QUEUED (or SCORING whose holder is gone) -> SCORING; None if not ours to take.

    A SCORING series may be taken over when its lease ran out, or by the same
    task id: Celery redelivers a message only after the worker that held it died
    (acks_late + reject_on_worker_lost), so its previous run is dead.
    The promoted model versions are pinned at the first claim of a revision and
    kept by every retry of it.
    """
    check_transition(SeriesStatus.QUEUED, SeriesStatus.SCORING)
    takeover = and_(Series.status == SeriesStatus.SCORING, or_(Series.lease_until < now, Series.claimed_by == task_id))
    stmt = (
        update(Series)
        .where(Series.id == series_id, Series.revision == revision, or_(Series.status == SeriesStatus.QUEUED, takeover))
        .values(
            status=SeriesStatus.SCORING,
            attempts=Series.attempts + 1,
            claimed_by=task_id,
            lease_until=now + timedelta(seconds=lease_s),
            updated_at=now,
            scorer_version_id=func.coalesce(Series.scorer_version_id, scorer_id),
            segmenter_version_id=func.coalesce(Series.segmenter_version_id, segmenter_id),
        )
        .returning(Series.attempts, Series.scorer_version_id, Series.segmenter_version_id)
    )
    row = session.execute(stmt).one_or_none()
    if row is None:
        return None
    attempt, scorer, segmenter = row
    return Claim(attempt=attempt, exhausted=attempt > max_attempts, scorer_id=scorer, segmenter_id=segmenter)


def finish_series(session: Session, attempt: Attempt, *, status: SeriesStatus, now: datetime, **values: Any) -> bool:
    """SCORING -> status, only for the holder of this attempt; False if fenced off."""
    check_transition(SeriesStatus.SCORING, status)
    stmt = (
        update(Series)
        .where(
            Series.id == attempt.series_id,
            Series.revision == attempt.revision,
            Series.status == SeriesStatus.SCORING,
            Series.attempts == attempt.number,
        )
        .values(status=status, lease_until=None, claimed_by=None, updated_at=now, **values)
    )
    return affected(session, stmt) == 1


def holds(session: Session, attempt: Attempt) -> bool:
    """Lock the series row and check that this attempt still holds it (results are fenced)."""
    stmt = select(Series.id).where(
        Series.id == attempt.series_id, Series.revision == attempt.revision, Series.status == SeriesStatus.SCORING,
        Series.attempts == attempt.number,
    )  # fmt: skip
    return session.scalar(stmt.with_for_update()) is not None


def republish(session: Session, *, series_id: int, revision: int) -> None:
    """Let the relay send the job again (a retry after a recoverable error)."""
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.series_id == series_id, OutboxEvent.revision == revision, OutboxEvent.topic == SCORE_TOPIC)
        .values(published_at=None)
    )

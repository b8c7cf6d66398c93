"""The routing service's state changes, fenced by the attempt (in process, real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.db.states import DecisionReason, Route, SeriesStatus
from app.db.tables import AuditEvent, Case, Series, SeriesDecision
from app.services import routing
from app.services.routing import Decision
from tests.fast.conftest import add_series

SETTINGS = Settings(task_time_limit_s=60, max_attempts=3)


def _status(db: Session, series_id: int) -> str:
    db.expire_all()
    return db.scalar(select(Series.status).where(Series.id == series_id))  # type: ignore[return-value]


def test_claim_records_who_started_and_manual_opens_one_case(db: Session) -> None:
    s = add_series(db)
    claimed = routing.claim(SETTINGS, series_id=s.id, revision=0, task_id="t1")
    assert claimed is not None and claimed.attempt.number == 1 and not claimed.exhausted
    assert _status(db, s.id) == SeriesStatus.SCORING
    assert routing.claim(SETTINGS, series_id=s.id, revision=0, task_id="t2") is None  # held by a live run
    d = Decision(Route.MANUAL, DecisionReason.ANOMALOUS, series_score=2.0, threshold=1.0)
    assert routing.record_decision(claimed.attempt, d, None)
    assert routing.to_manual(claimed.attempt, reason=d.reason, priority=d.priority, geometry=None)
    assert _status(db, s.id) == SeriesStatus.MANUAL
    assert db.scalar(select(Case.reason).where(Case.series_id == s.id)) == "anomalous"
    actions = set(db.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == str(s.id))))
    assert {"series.claimed", "series.decided", "case.opened"} <= actions


def test_a_run_whose_lease_was_taken_over_records_nothing(db: Session) -> None:
    """Two live runs of one series: after a takeover, the first attempt's results are refused."""
    s = add_series(db)
    first = routing.claim(SETTINGS, series_id=s.id, revision=0, task_id="slow")
    assert first is not None
    db.execute(update(Series).where(Series.id == s.id).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    db.flush()
    second = routing.claim(SETTINGS, series_id=s.id, revision=0, task_id="fast")
    assert second is not None and second.attempt.number == 2
    stale = Decision(Route.AUTO, DecisionReason.IN_DISTRIBUTION, series_score=0.1, threshold=1.0)
    assert not routing.record_decision(first.attempt, stale, None)
    assert not routing.to_manual(first.attempt, reason="anomalous", priority=1.0, geometry=None)
    routing.fail(first.attempt, "stale")
    assert _status(db, s.id) == SeriesStatus.SCORING  # still the second run's
    assert db.scalar(select(SeriesDecision.id).where(SeriesDecision.series_id == s.id)) is None
    assert routing.record_decision(second.attempt, stale, None)


def test_over_the_attempt_cap_fails_into_a_first_priority_case(db: Session) -> None:
    s = add_series(db, attempts=SETTINGS.max_attempts)
    claimed = routing.claim(SETTINGS, series_id=s.id, revision=0, task_id="t")
    assert claimed is not None and claimed.exhausted
    routing.fail(claimed.attempt, "gave up")
    assert _status(db, s.id) == SeriesStatus.FAILED
    case = db.scalar(select(Case).where(Case.series_id == s.id))
    assert case is not None and case.reason == DecisionReason.FAILED and case.priority == routing.FIRST


def test_retry_puts_the_series_back_in_the_queue(db: Session) -> None:
    s = add_series(db)
    claimed = routing.claim(SETTINGS, series_id=s.id, revision=0, task_id="t")
    assert claimed is not None
    routing.retry_later(claimed.attempt, "error: OSError")
    assert _status(db, s.id) == SeriesStatus.QUEUED
    again = routing.claim(SETTINGS, series_id=s.id, revision=0, task_id="t-retry")
    assert again is not None and again.attempt.number == 2


def test_a_stale_revision_is_not_claimed(db: Session) -> None:
    s = add_series(db, revision=2)
    assert routing.claim(SETTINGS, series_id=s.id, revision=1, task_id="old") is None

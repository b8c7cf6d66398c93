"""SQL for routing results: decisions, manual cases, segmentations, derived SEG series."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db.rows import affected
from app.db.tables import Case, Segmentation, SeriesDecision


def _insert(session: Session, table: Any, values: dict[str, Any], keys: list[str]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when a row was inserted."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return bool(affected(session, insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)))


def record_decision(session: Session, **values: Any) -> bool:
    """One decision per (series, revision, scorer version): a retry does not add another."""
    return _insert(session, SeriesDecision.__table__, values, ["series_id", "revision", "scorer_key"])


def open_case(session: Session, *, series_id: int, revision: int, reason: str, priority: float) -> bool:
    values = {"series_id": series_id, "revision": revision, "reason": reason, "priority": priority, "status": "open"}
    return _insert(session, Case.__table__, values, ["series_id", "revision"])


def record_segmentation(session: Session, **values: Any) -> bool:
    return _insert(session, Segmentation.__table__, values, ["series_id", "revision", "segmenter_version_id"])


def latest_decision(session: Session, series_id: int, revision: int | None = None) -> SeriesDecision | None:
    """The series' latest decision, or its latest for one revision."""
    stmt = select(SeriesDecision).where(SeriesDecision.series_id == series_id).order_by(SeriesDecision.id.desc())
    if revision is not None:
        stmt = stmt.where(SeriesDecision.revision == revision)
    return session.scalar(stmt.limit(1))


def latest_segmentation(session: Session, series_id: int) -> Segmentation | None:
    stmt = select(Segmentation).where(Segmentation.series_id == series_id).order_by(Segmentation.id.desc())
    return session.scalar(stmt.limit(1))

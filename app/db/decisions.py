"""SQL for routing results: decisions and segmentations, one row per (series, revision, model)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.rows import insert_ignore
from app.db.states import DecisionReason, Route
from app.db.tables import Segmentation, SeriesDecision


def record_decision(session: Session, **values: Any) -> bool:
    """One decision per (series, revision, scorer version): a retry does not add another."""
    return insert_ignore(session, SeriesDecision.__table__, values, ["series_id", "revision", "scorer_key"])


def record_segmentation(session: Session, **values: Any) -> bool:
    return insert_ignore(session, Segmentation.__table__, values, ["series_id", "revision", "segmenter_version_id"])


def latest_decision(session: Session, series_id: int, revision: int | None = None) -> SeriesDecision | None:
    """The series' latest decision, or its latest for one revision."""
    stmt = select(SeriesDecision).where(SeriesDecision.series_id == series_id).order_by(SeriesDecision.id.desc())
    if revision is not None:
        stmt = stmt.where(SeriesDecision.revision == revision)
    return session.scalar(stmt.limit(1))


def latest_segmentation(session: Session, series_id: int) -> Segmentation | None:
    stmt = select(Segmentation).where(Segmentation.series_id == series_id).order_by(Segmentation.id.desc())
    return session.scalar(stmt.limit(1))


def decision_for(session: Session, *, series_id: int, revision: int) -> SeriesDecision | None:
    """The decision of one revision (the latest, should a retry under another scorer have added one)."""
    stmt = select(SeriesDecision).where(SeriesDecision.series_id == series_id, SeriesDecision.revision == revision)
    return session.scalar(stmt.order_by(SeriesDecision.id.desc()).limit(1))


def segmentation_for(session: Session, *, series_id: int, revision: int) -> Segmentation | None:
    stmt = select(Segmentation).where(Segmentation.series_id == series_id, Segmentation.revision == revision)
    return session.scalar(stmt.order_by(Segmentation.id.desc()).limit(1))


def mark_failed(session: Session, *, series_id: int, revision: int) -> None:
    """The revision's decisions become manual/failed (the series failed after it was decided)."""
    session.execute(
        update(SeriesDecision)
        .where(SeriesDecision.series_id == series_id, SeriesDecision.revision == revision)
        .values(decision=Route.MANUAL, reason=DecisionReason.FAILED)
    )

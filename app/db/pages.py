"""SQL the pages read: one case with its series and study, closed cases of a reader, series by state."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.states import CaseStatus
from app.db.tables import Case, Series, SeriesDecision, Study, TrainingJob


def case_with_uids(session: Session, case_id: int) -> tuple[Case, Series, str] | None:
    stmt = (
        select(Case, Series, Study.study_uid)
        .join(Series, Series.id == Case.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(Case.id == case_id)
    )
    found = session.execute(stmt).first()
    return None if found is None else (found[0], found[1], found[2])


def closed_by(session: Session, *, reader: str, limit: int) -> list[Case]:
    """The reader's submitted, rejected or superseded cases, newest first."""
    closed = (CaseStatus.SUBMITTED, CaseStatus.REJECTED, CaseStatus.SUPERSEDED)
    stmt = select(Case).where(Case.claimed_by == reader, Case.status.in_(closed)).order_by(Case.updated_at.desc())
    return list(session.scalars(stmt.limit(limit)))


def series_page(session: Session, *, status: str | None, limit: int) -> list[tuple[Series, SeriesDecision | None]]:
    """Series (newest activity first) with the latest decision of their current revision."""
    decision = (
        select(SeriesDecision.id)
        .where(SeriesDecision.series_id == Series.id, SeriesDecision.revision == Series.revision)
        .order_by(SeriesDecision.id.desc())
        .limit(1)
        .correlate(Series)
        .scalar_subquery()
    )
    stmt = (
        select(Series, SeriesDecision)
        .outerjoin(SeriesDecision, SeriesDecision.id == decision)
        .order_by(Series.updated_at.desc(), Series.id.desc())
    )
    if status:
        stmt = stmt.where(Series.status == status)
    return [(s, d) for s, d in session.execute(stmt.limit(limit))]


def training_jobs(session: Session, *, limit: int) -> list[TrainingJob]:
    return list(session.scalars(select(TrainingJob).order_by(TrainingJob.id.desc()).limit(limit)))

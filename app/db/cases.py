"""SQL for the radiologists' cases: opening one, listing by priority and compare-and-set claims."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy import case as case_when
from sqlalchemy.orm import Session

from app.db.rows import affected, insert_ignore
from app.db.states import CaseStatus
from app.db.tables import Case, Series, Study

OPEN, CLAIMED, SUBMITTED, REJECTED = CaseStatus.OPEN, CaseStatus.CLAIMED, CaseStatus.SUBMITTED, CaseStatus.REJECTED
SUPERSEDED = CaseStatus.SUPERSEDED


def open_case(session: Session, *, series_id: int, revision: int, reason: str, priority: float) -> bool:
    """One case per (series, revision): a retry of the same run does not open a second."""
    values = {"series_id": series_id, "revision": revision, "reason": reason, "priority": priority, "status": OPEN}
    return insert_ignore(session, Case.__table__, values, ["series_id", "revision"])


def _available(now: datetime):  # type: ignore[no-untyped-def]
    """Open, or claimed with an expired lease (the claim lapsed)."""
    return or_(Case.status == OPEN, and_(Case.status == CLAIMED, Case.lease_until < now))


def visible_cases(session: Session, *, reader: str, now: datetime, limit: int) -> list[tuple[Case, str, str]]:
    """What a reader may see: available cases by priority then age, and the reader's own claims."""
    stmt = (
        select(Case, Series.series_uid, Study.study_uid)
        .join(Series, Series.id == Case.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(or_(_available(now), and_(Case.status == CLAIMED, Case.claimed_by == reader)))
        .order_by(Case.priority.desc(), Case.created_at, Case.id)
        .limit(limit)
    )
    return [(c, s, st) for c, s, st in session.execute(stmt)]


def position(session: Session, case: Case, now: datetime) -> int:
    """1-based place among available cases (priority, then age)."""
    ahead = session.scalar(
        select(func.count(Case.id)).where(
            _available(now),
            or_(
                Case.priority > case.priority,
                and_(
                    Case.priority == case.priority,
                    or_(Case.created_at < case.created_at, and_(Case.created_at == case.created_at, Case.id < case.id)),
                ),
            ),
        )  # fmt: skip
    )
    return int(ahead or 0) + 1


def next_available_id(session: Session, now: datetime) -> int | None:
    stmt = select(Case.id).where(_available(now)).order_by(Case.priority.desc(), Case.created_at, Case.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return session.scalar(stmt)


def _held_by(reader: str, now: datetime):  # type: ignore[no-untyped-def]
    return and_(Case.status == CLAIMED, Case.claimed_by == reader, Case.lease_until >= now)


def claim(session: Session, *, case_id: int, reader: str, now: datetime, lease_s: float) -> bool:
    """Take a case that is available (or already ours: renews the lease).

    A new take (not a renewal of a live claim) increments claim_version, so a contour checked under an
    earlier claim can no longer be stored (``submit``)."""
    stmt = (
        update(Case)
        .where(Case.id == case_id, or_(_available(now), and_(Case.status == CLAIMED, Case.claimed_by == reader)))
        .values(
            status=CLAIMED,
            claimed_by=reader,
            lease_until=now + timedelta(seconds=lease_s),
            updated_at=now,
            claim_version=Case.claim_version + case_when((_held_by(reader, now), 0), else_=1),
        )
    )
    return affected(session, stmt) == 1


def submit(session: Session, *, case_id: int, reader: str, claim_version: int, now: datetime, path: str) -> bool:
    """claimed-by-reader under ``claim_version`` (lease still valid) -> submitted, naming the stored contour."""
    stmt = (
        update(Case)
        .where(Case.id == case_id, _held_by(reader, now), Case.claim_version == claim_version)
        .values(status=SUBMITTED, contour_path=path, updated_at=now)
    )
    return affected(session, stmt) == 1


def supersede(session: Session, *, series_id: int, revision: int, now: datetime) -> list[int]:
    """Close the open or claimed cases of the series' earlier revisions; their ids."""
    stmt = (
        update(Case)
        .where(Case.series_id == series_id, Case.revision < revision, Case.status.in_((OPEN, CLAIMED)))
        .values(status=SUPERSEDED, lease_until=None, updated_at=now,
                reject_reason=f"superseded by revision {revision} of the series (a late instance re-opened it)")
        .returning(Case.id)
    )  # fmt: skip
    return list(session.scalars(stmt))


def move_own(session: Session, *, case_id: int, reader: str, now: datetime, status: str, **values: object) -> bool:
    """claimed-by-reader (lease still valid) -> status."""
    stmt = update(Case).where(Case.id == case_id, _held_by(reader, now)).values(status=status, updated_at=now, **values)
    return affected(session, stmt) == 1


def of_series(session: Session, *, series_id: int, revision: int) -> Case | None:
    """The case of the series' ``revision`` (one at most: uq_case), whatever its status."""
    return session.scalar(select(Case).where(Case.series_id == series_id, Case.revision == revision))


def held_by_reader(session: Session, *, reader: str, now: datetime) -> list[int]:
    """The ids of the cases ``reader`` holds now (a live claim)."""
    return list(session.scalars(select(Case.id).where(_held_by(reader, now)).order_by(Case.id)))

"""SQL of the results outbox: SEGs on their way to the PACS (``deliveries``).

Every status change is a compare-and-set UPDATE: a delivery is held by the attempt that claimed it
(``attempts`` is the fencing token), so a worker whose lease lapsed and was taken over records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.db.rows import affected
from app.db.states import DeliveryKind, DeliveryStatus
from app.db.tables import Delivery


@dataclass(frozen=True)
class DeliveryAttempt:
    """What a claim hands a worker: the row's content when it was claimed, and its attempt number."""

    id: int
    number: int
    kind: DeliveryKind
    series_id: int
    revision: int
    case_id: int | None
    seg_path: str | None
    seg_sop_uid: str | None
    schedule_start: int  # attempts made before the current schedule began (an admin's send-again)

    @property
    def in_schedule(self) -> int:
        """This attempt's number within the current schedule (1-based)."""
        return self.number - self.schedule_start


def add(
    session: Session, *, kind: DeliveryKind, series_id: int, revision: int, destination: str, now: datetime,
    case_id: int | None = None, seg_path: str | None = None, seg_sop_uid: str | None = None,
) -> Delivery:  # fmt: skip
    """A pending delivery, due at once, in the caller's transaction (the one that accepted the result)."""
    row = Delivery(kind=kind, series_id=series_id, revision=revision, case_id=case_id, seg_path=seg_path,
                   seg_sop_uid=seg_sop_uid, destination=destination, status=DeliveryStatus.PENDING, attempts=0,
                   next_attempt_at=now, publish_count=0, created_at=now)  # fmt: skip
    session.add(row)
    session.flush()
    return row


def due(session: Session, *, now: datetime, limit: int = 100) -> list[Delivery]:
    """Pending deliveries whose next attempt is due and that are not in the broker yet (rows locked where the
    database can, so two dispatchers never publish one row twice in one tick)."""
    stmt = (
        select(Delivery)
        .where(
            Delivery.status == DeliveryStatus.PENDING, Delivery.published_at.is_(None), Delivery.next_attempt_at <= now
        )  # fmt: skip
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def reset_stale(session: Session, *, now: datetime, published_before: datetime) -> list[int]:
    """Back to be published: pending rows sent to the broker but never picked up, and rows whose holder's
    lease ran out (a worker killed mid-send). The latter keep their attempt count: the schedule stays bounded."""
    stale = or_(
        and_(Delivery.status == DeliveryStatus.PENDING, Delivery.published_at < published_before),
        and_(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < now),
    )
    ids = list(session.scalars(select(Delivery.id).where(stale)))
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), stale)
            .values(status=DeliveryStatus.PENDING, published_at=None, lease_until=None)  # fmt: skip
        )
    return ids


def claim(session: Session, *, delivery_id: int, now: datetime, lease_s: float) -> DeliveryAttempt | None:
    """PENDING -> SENDING, attempt + 1; None when the row is not pending (delivered, failed, or held)."""
    moved = affected(
        session,
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.PENDING)
        .values(
            status=DeliveryStatus.SENDING, attempts=Delivery.attempts + 1, lease_until=now + timedelta(seconds=lease_s)
        ),  # fmt: skip
    )
    if moved != 1:
        return None
    row = session.get(Delivery, delivery_id, populate_existing=True)
    assert row is not None
    return DeliveryAttempt(row.id, row.attempts, DeliveryKind(row.kind), row.series_id, row.revision, row.case_id,
                           row.seg_path, row.seg_sop_uid, row.schedule_start)  # fmt: skip


def update_held(session: Session, attempt: DeliveryAttempt, **values: Any) -> bool:
    """Write ``values`` only while ``attempt`` still holds the row; False when it was fenced off."""
    stmt = (
        update(Delivery)
        .where(
            Delivery.id == attempt.id, Delivery.status == DeliveryStatus.SENDING, Delivery.attempts == attempt.number
        )  # fmt: skip
        .values(**values)
    )
    return affected(session, stmt) == 1


def listing(session: Session, *, status: DeliveryStatus | None, limit: int, offset: int) -> list[Delivery]:
    stmt = select(Delivery).order_by(Delivery.id.desc()).limit(limit).offset(offset)
    if status is not None:
        stmt = stmt.where(Delivery.status == status)
    return list(session.scalars(stmt))


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
    return {str(status): int(n) for status, n in rows}


def send_again(session: Session, *, delivery_id: int, now: datetime) -> bool:
    """FAILED -> PENDING with a fresh schedule (an admin, after fixing the destination). The attempt number
    keeps growing (it fences a holder that may still be running); the schedule counts from here."""
    stmt = (
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.FAILED)
        .values(
            status=DeliveryStatus.PENDING,
            schedule_start=Delivery.attempts,
            next_attempt_at=now,
            published_at=None,
            lease_until=None,
        )  # fmt: skip
    )
    return affected(session, stmt) == 1


def attach_case_seg(session: Session, *, case_id: int, seg_path: str, seg_sop_uid: str) -> int:
    """Name a contour's own stored SEG on its pending delivery, so the PACS gets that SEG (none is rewritten)."""
    stmt = (
        update(Delivery)
        .where(Delivery.case_id == case_id, Delivery.seg_path.is_(None))
        .values(seg_path=seg_path, seg_sop_uid=seg_sop_uid)
    )
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]

"""Read queries for WADO-RS and the series API (QIDO-RS matching is in app.db.qido)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import Instance, Series, Study


def find_instances(
    session: Session, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[tuple[Instance, Series]]:
    stmt = (
        select(Instance, Series)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(Study.study_uid == study_uid)
        .order_by(Series.id, Instance.instance_number, Instance.id)
    )
    if series_uid:
        stmt = stmt.where(Series.series_uid == series_uid)
    if sop_uid:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    return [(i, s) for i, s in session.execute(stmt)]


def series_by_uid(session: Session, series_uid: str) -> Series | None:
    return session.scalar(select(Series).where(Series.series_uid == series_uid))


def instance_paths(session: Session, series_id: int) -> list[str]:
    return list(session.scalars(select(Instance.storage_path).where(Instance.series_id == series_id)))


def study_uid_of(session: Session, study_id: int) -> str:
    return session.scalars(select(Study.study_uid).where(Study.id == study_id)).one()

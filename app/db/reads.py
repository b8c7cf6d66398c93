"""Read queries for QIDO-RS, WADO-RS and the series API."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.tables import Instance, Series, Study


@dataclass(frozen=True)
class StudyFilter:
    study_uid: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    date_from: str | None = None  # YYYYMMDD, inclusive
    date_to: str | None = None
    modality: str | None = None
    limit: int = 100
    offset: int = 0


def find_studies(session: Session, f: StudyFilter) -> list[tuple[Study, int, int, list[str]]]:
    """(study, number of series, number of instances, modalities) per matching study."""
    stmt = select(Study).order_by(Study.id)
    if f.study_uid:
        stmt = stmt.where(Study.study_uid == f.study_uid)
    if f.patient_id:
        stmt = stmt.where(Study.patient_id == f.patient_id)
    if f.accession_number:
        stmt = stmt.where(Study.accession_number == f.accession_number)
    if f.date_from:
        stmt = stmt.where(Study.study_date >= f.date_from)
    if f.date_to:
        stmt = stmt.where(Study.study_date <= f.date_to)
    if f.modality:
        stmt = stmt.where(Study.id.in_(select(Series.study_id).where(Series.modality == f.modality)))
    studies = list(session.scalars(stmt.limit(f.limit).offset(f.offset)))
    out = []
    for study in studies:
        rows = session.execute(
            select(Series.modality, func.count(Instance.id))
            .join(Instance, Instance.series_id == Series.id)
            .where(Series.study_id == study.id)
            .group_by(Series.id, Series.modality)
        ).all()
        modalities = sorted({m for m, _ in rows if m})
        out.append((study, len(rows), sum(n for _, n in rows), modalities))
    return out


def find_series(
    session: Session, *, study_uid: str | None, series_uid: str | None, modality: str | None, limit: int, offset: int
) -> list[tuple[Series, Study]]:
    stmt = select(Series, Study).join(Study, Study.id == Series.study_id).order_by(Series.id)
    if study_uid:
        stmt = stmt.where(Study.study_uid == study_uid)
    if series_uid:
        stmt = stmt.where(Series.series_uid == series_uid)
    if modality:
        stmt = stmt.where(Series.modality == modality)
    return [(s, st) for s, st in session.execute(stmt.limit(limit).offset(offset))]


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

"""SQL for ingest: upserts that are safe when several API processes race."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db.states import SeriesStatus
from app.db.tables import Instance, Series, Study


def _insert_ignore(session: Session, table: Any, values: dict[str, Any], key: str) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=[key]))


def stored_digests(session: Session, sop_uids: list[str]) -> dict[str, str]:
    """SOP Instance UID -> sha256 for those already stored."""
    if not sop_uids:
        return {}
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.sha256).where(Instance.sop_instance_uid.in_(sop_uids))
    )
    return {uid: sha for uid, sha in rows}


def stored_path(session: Session, sop_uid: str) -> str | None:
    """The storage path of a stored instance (relative to the storage root)."""
    return session.scalar(select(Instance.storage_path).where(Instance.sop_instance_uid == sop_uid))


def stored_paths(session: Session, paths: list[str]) -> set[str]:
    """Those of paths that an instance row references."""
    if not paths:
        return set()
    return set(session.scalars(select(Instance.storage_path).where(Instance.storage_path.in_(paths))))


def study_identities(session: Session, study_uids: list[str]) -> dict[str, Row[str, int, str | None, str | None]]:
    """StudyInstanceUID -> (id, patient_id, issuer_of_patient_id) for the stored studies among them."""
    if not study_uids:
        return {}
    stmt = select(Study.study_uid, Study.id, Study.patient_id, Study.issuer_of_patient_id)
    return {row[0]: row for row in session.execute(stmt.where(Study.study_uid.in_(study_uids)))}


def series_identities(
    session: Session, series_uids: list[str]
) -> dict[str, Row[str, int, str, str | None, str | None]]:
    """SeriesInstanceUID -> (id, study_uid, modality, frame_of_reference_uid) for the stored series among them."""
    if not series_uids:
        return {}
    stmt = select(Series.series_uid, Series.id, Study.study_uid, Series.modality, Series.frame_of_reference_uid)
    stmt = stmt.join(Study, Study.id == Series.study_id).where(Series.series_uid.in_(series_uids))
    return {row[0]: row for row in session.execute(stmt)}


def ensure_study(session: Session, *, study_uid: str, values: dict[str, Any]) -> int:
    # Look first: after a series' first batch the row exists, and one round trip is enough.
    found = session.scalar(select(Study.id).where(Study.study_uid == study_uid))
    if found is not None:
        return found
    _insert_ignore(session, Study.__table__, {"study_uid": study_uid, **values}, "study_uid")
    return session.scalar(select(Study.id).where(Study.study_uid == study_uid))  # type: ignore[return-value]


def ensure_series(session: Session, *, series_uid: str, study_id: int, values: dict[str, Any]) -> int:
    found = session.scalar(select(Series.id).where(Series.series_uid == series_uid))
    if found is not None:
        return found
    row = {"series_uid": series_uid, "study_id": study_id, "status": SeriesStatus.RECEIVING, **values}
    _insert_ignore(session, Series.__table__, row, "series_uid")
    return session.scalar(select(Series.id).where(Series.series_uid == series_uid))  # type: ignore[return-value]


def record_arrivals(session: Session, *, series_id: int, count: int, now: datetime) -> tuple[str, int]:
    """Count new instances and re-open a series that had already completed.

    One UPDATE, so it is atomic: it returns the status before the update and the
    revision after it. A series that was past RECEIVING gets a new revision, so
    a job for the old revision finds itself stale and does nothing.
    """
    previous = session.scalar(select(Series.status).where(Series.id == series_id).with_for_update())
    reopen = previous != SeriesStatus.RECEIVING
    stmt = (
        update(Series)
        .where(Series.id == series_id)
        .values(
            instance_count=Series.instance_count + count,
            last_instance_at=now,
            status=SeriesStatus.RECEIVING,
            revision=case((Series.status != SeriesStatus.RECEIVING, Series.revision + 1), else_=Series.revision),
            attempts=case((Series.status != SeriesStatus.RECEIVING, 0), else_=Series.attempts),
            lease_until=None,
            updated_at=now,
            # a re-opened series is scored by the versions promoted at its next claim
            scorer_version_id=case((Series.status != SeriesStatus.RECEIVING, None), else_=Series.scorer_version_id),
            segmenter_version_id=case(
                (Series.status != SeriesStatus.RECEIVING, None), else_=Series.segmenter_version_id
            ),
        )
        .returning(Series.revision)
    )
    revision = session.execute(stmt).scalar_one()
    return (str(previous) if reopen else SeriesStatus.RECEIVING), revision

"""SQL for QIDO-RS: the matches of app.services.qido_query as WHERE clauses, the same on both databases.

Wildcard matching is case-sensitive on PostgreSQL and SQLite alike: LIKE on PostgreSQL, GLOB on SQLite
(SQLite's LIKE ignores ASCII case), with each database's metacharacters escaped. Person names ignore
ASCII case on both: lower() on SQLite folds ASCII letters only, so PostgreSQL folds with translate()
to match it exactly rather than with its Unicode-aware lower().
"""

from __future__ import annotations

import string
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, literal, select
from sqlalchemy.orm import Session

from app.db.tables import Instance, Series, Study
from app.services.qido_query import KEYS, Kind, Match

S = TypeVar("S", bound=Select)  # type: ignore[type-arg]
_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _json_text(column: Any, tag: str, *path: str) -> ColumnElement[str]:
    """Value[0] of a DICOM JSON element as text (a number, e.g. IS, as its decimal digits)."""
    return column[(tag, "Value", 0, *path)].as_string()  # type: ignore[no-any-return]


# Where each matchable attribute is stored: an indexed column where ingest keeps one, else the DICOM JSON.
COLUMNS: dict[str, Any] = {
    "StudyInstanceUID": lambda: Study.study_uid,
    "PatientName": lambda: _json_text(Study.attributes, "00100010", "Alphabetic"),
    "PatientID": lambda: Study.patient_id,
    "PatientBirthDate": lambda: _json_text(Study.attributes, "00100030"),
    "PatientSex": lambda: _json_text(Study.attributes, "00100040"),
    "AccessionNumber": lambda: Study.accession_number,
    "StudyDate": lambda: Study.study_date,
    "StudyTime": lambda: _json_text(Study.attributes, "00080030"),
    "StudyID": lambda: _json_text(Study.attributes, "00200010"),
    "StudyDescription": lambda: _json_text(Study.attributes, "00081030"),
    "ReferringPhysicianName": lambda: _json_text(Study.attributes, "00080090", "Alphabetic"),
    "ModalitiesInStudy": lambda: Series.modality,
    "SeriesInstanceUID": lambda: Series.series_uid,
    "Modality": lambda: Series.modality,
    "SeriesNumber": lambda: _json_text(Series.attributes, "00200011"),
    "SeriesDescription": lambda: _json_text(Series.attributes, "0008103E"),
    "SeriesDate": lambda: _json_text(Series.attributes, "00080021"),
    "SOPInstanceUID": lambda: Instance.sop_instance_uid,
    "SOPClassUID": lambda: Instance.sop_class_uid,
    "InstanceNumber": lambda: Instance.instance_number,
}
assert set(COLUMNS) == set(KEYS), "every matchable attribute needs a column"


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _glob(pattern: str) -> str:
    # GLOB has no escape character: a literal [ is the class [[]; * and ? are always DICOM wildcards
    return pattern.replace("[", "[[]")


def _fold(dialect: str, expr: ColumnElement[str]) -> ColumnElement[str]:
    if dialect == "sqlite":
        return func.lower(expr)
    return func.translate(expr, string.ascii_uppercase, string.ascii_lowercase)


def _text_clause(dialect: str, expr: ColumnElement[str], m: Match) -> ColumnElement[bool]:
    fold = m.kind is Kind.NAME
    if fold:
        expr = _fold(dialect, expr)
    if m.pattern is None:
        value = m.values[0].translate(_FOLD) if fold else m.values[0]
        return expr == value
    pattern = m.pattern.translate(_FOLD) if fold else m.pattern
    if dialect == "sqlite":
        return expr.op("GLOB")(_glob(pattern))
    return expr.like(_like(pattern), escape="\\")


def _range(expr: ColumnElement[str], low: str | None, high: str | None) -> ColumnElement[bool]:
    if low is not None and low == high:
        return expr == low
    clauses: list[ColumnElement[bool]] = [expr.is_not(None)]
    if low is not None:
        clauses.append(expr >= low)
    if high is not None:
        clauses.append(expr <= high)
    return and_(*clauses)


def clause(dialect: str, m: Match) -> ColumnElement[bool]:
    """The WHERE clause of one match."""
    expr = COLUMNS[m.keyword]()
    if m.kind is Kind.UID:
        return expr.in_(m.values)
    if m.kind is Kind.CODES:  # any series of the study has one of the modalities
        return Study.id.in_(select(Series.study_id).where(Series.modality.in_(m.values)))
    if m.kind is Kind.NUMBER:
        if m.keyword == "InstanceNumber":
            return expr == int(m.values[0])
        return expr == m.values[0]
    if m.kind is Kind.DATE:
        return _range(expr, m.low, m.high)
    if m.kind is Kind.TIME:  # stored HH, HHMM, HHMMSS or HHMMSS.F compared to the second
        return _range(func.substr(expr.concat(literal("000000")), 1, 6), m.low, m.high)
    return _text_clause(dialect, expr, m)


def _where(session: Session, stmt: S, matches: tuple[Match, ...]) -> S:
    dialect = session.get_bind().dialect.name
    return stmt.where(*(clause(dialect, m) for m in matches)) if matches else stmt


def find_studies(
    session: Session, *, matches: tuple[Match, ...], limit: int, offset: int
) -> list[tuple[Study, int, int, list[str]]]:
    """(study, number of series, number of instances, modalities) per matching study."""
    stmt = _where(session, select(Study).order_by(Study.id), matches)
    studies = list(session.scalars(stmt.limit(limit).offset(offset)))
    counts: dict[int, list[tuple[str | None, int]]] = {s.id: [] for s in studies}
    rows = session.execute(
        select(Series.study_id, Series.modality, func.count(Instance.id))
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id.in_(list(counts)))
        .group_by(Series.id, Series.study_id, Series.modality)
    )
    for study_id, modality, n in rows:
        counts[study_id].append((modality, n))
    return [(s, len(counts[s.id]), sum(n for _, n in counts[s.id]), sorted({m for m, _ in counts[s.id] if m}))
            for s in studies]  # fmt: skip


def find_series(
    session: Session, *, matches: tuple[Match, ...], limit: int, offset: int, study_uid: str | None = None
) -> list[tuple[Series, Study]]:
    stmt = select(Series, Study).join(Study, Study.id == Series.study_id).order_by(Series.id)
    if study_uid is not None:
        stmt = stmt.where(Study.study_uid == study_uid)
    stmt = _where(session, stmt, matches)
    return [(row[0], row[1]) for row in session.execute(stmt.limit(limit).offset(offset))]


def find_instances(
    session: Session, *, matches: tuple[Match, ...], limit: int, offset: int,
    study_uid: str | None = None, series_uid: str | None = None,
) -> list[tuple[Instance, Series, Study]]:  # fmt: skip
    stmt = (
        select(Instance, Series, Study)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .order_by(Series.id, Instance.instance_number, Instance.id)
    )
    if study_uid is not None:
        stmt = stmt.where(Study.study_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(Series.series_uid == series_uid)
    stmt = _where(session, stmt, matches)
    return [(row[0], row[1], row[2]) for row in session.execute(stmt.limit(limit).offset(offset))]

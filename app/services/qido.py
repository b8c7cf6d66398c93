"""QIDO-RS search: parse the query, run it at the resource's level, shape each result (PS3.18 10.6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword
from sqlalchemy.orm import Session

from app.db import qido as qido_sql
from app.services import dicomweb as dj
from app.services.qido_query import Query, Resource, parse_query

__all__ = ["Resource", "SearchResult", "search"]

# The levels whose attributes a result of each resource carries, and what it can return at all.
_STUDY, _SERIES, _INSTANCE = (
    (dj.STUDY_DEFAULT, dj.STUDY_STORED), (dj.SERIES_DEFAULT, dj.SERIES_STORED),
    (dj.INSTANCE_DEFAULT, dj.INSTANCE_STORED),
)  # fmt: skip
_SHAPES = {
    Resource.STUDIES: (_STUDY,), Resource.STUDY_SERIES: (_SERIES,), Resource.ALL_SERIES: (_STUDY, _SERIES),
    Resource.SERIES_INSTANCES: (_INSTANCE,), Resource.STUDY_INSTANCES: (_SERIES, _INSTANCE),
    Resource.ALL_INSTANCES: (_STUDY, _SERIES, _INSTANCE),
}  # fmt: skip
MORE = "There are additional results that can be requested"  # PS3.18 8.3.4.4's warning text


@dataclass
class SearchResult:
    items: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


def _rows(session: Session, query: Query, base: str, study_uid: str | None, series_uid: str | None) -> list[dict]:
    # one more than the limit: is there more to ask for?
    page = {"matches": query.matches, "limit": query.limit + 1, "offset": query.offset}
    r = query.resource
    if r is Resource.STUDIES:
        studies = qido_sql.find_studies(session, **page)  # type: ignore[arg-type]
        return [dj.study_json(s, base, (ns, ni, mods)) for s, ns, ni, mods in studies]
    if r in (Resource.STUDY_SERIES, Resource.ALL_SERIES):
        rows = qido_sql.find_series(session, study_uid=study_uid, **page)  # type: ignore[arg-type]
        study_level = r is Resource.ALL_SERIES
        return [{**(dj.study_json(st, base) if study_level else {}), **dj.series_json(s, st, base)} for s, st in rows]
    out = []
    for inst, s, st in qido_sql.find_instances(session, study_uid=study_uid, series_uid=series_uid, **page):  # type: ignore[arg-type]
        upper = dj.study_json(st, base) if r is Resource.ALL_INSTANCES else {}
        if r is not Resource.SERIES_INSTANCES:
            upper = {**upper, **dj.series_json(s, st, base)}
        out.append({**upper, **dj.instance_json(inst, s, st.study_uid, base)})
    return out


def _shape(query: Query) -> tuple[frozenset[str], frozenset[str] | None, list[str]]:
    """(default tags, requested tags or None for all, requested keywords this service does not keep)."""
    shapes = _SHAPES[query.resource]
    defaults = frozenset().union(*(d for d, _ in shapes))
    stored = frozenset().union(*(s for _, s in shapes))
    missing = sorted(k for k in query.include if k not in stored)
    include = None if query.include_all else frozenset(f"{tag_for_keyword(k):08X}" for k in query.include)
    return defaults, include, missing


def search(
    *, session: Session, resource: Resource, params: list[tuple[str, str]], base: str,
    study_uid: str | None = None, series_uid: str | None = None,
) -> SearchResult:  # fmt: skip
    """Matching results, each with the attributes PS3.18 returns by default and those asked for."""
    query = parse_query(resource, params)
    rows = _rows(session, query, base, study_uid, series_uid)
    defaults, include, missing = _shape(query)
    result = SearchResult([dj.returned(row, defaults, include) for row in rows[: query.limit]])
    if len(rows) > query.limit:
        result.warnings.append(MORE)
    if missing:
        result.warnings.append(f"includefield: not kept by this service, not returned: {', '.join(missing)}")
    return result

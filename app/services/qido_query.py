"""QIDO-RS query parameters (PS3.18 8.3.4) parsed into matches (PS3.4 C.2.2.2), or refused.

An attribute this service cannot match is refused with a message that names it: a filter that were
silently dropped would answer another patient's studies. Messages name the attribute and the rule,
never the value (a value may be a patient's name or ID).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from app.core.errors import DomainError

# A whole series per query (CT series run to a few thousand slices); beyond it, a Warning and offset paging.
MAX_LIMIT, MAX_OFFSET, DEFAULT_LIMIT = 10_000, 2**63 - 1, 10_000
MAX_UIDS = 200  # a UID list longer than this is a bulk export, not a query
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
_CODE = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadQuery(DomainError, ValueError):
    """A query parameter this service refuses (400); the message names it, never its value."""


class Level(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class Resource(StrEnum):
    """The six QIDO-RS resources (PS3.18 10.6.1), each with the levels whose keys it matches."""

    STUDIES = "studies"
    STUDY_SERIES = "study_series"
    STUDY_INSTANCES = "study_instances"
    SERIES_INSTANCES = "series_instances"
    ALL_SERIES = "all_series"
    ALL_INSTANCES = "all_instances"


# PS3.18 table 10.6.1-2: which levels' attributes each resource may match on.
RESOURCE_LEVELS = {
    Resource.STUDIES: (Level.STUDY,),
    Resource.ALL_SERIES: (Level.STUDY, Level.SERIES),
    Resource.STUDY_SERIES: (Level.SERIES,),
    Resource.ALL_INSTANCES: (Level.STUDY, Level.SERIES, Level.INSTANCE),
    Resource.STUDY_INSTANCES: (Level.SERIES, Level.INSTANCE),
    Resource.SERIES_INSTANCES: (Level.INSTANCE,),
}


class Kind(StrEnum):
    UID = "uid"  # single value or a UID list; no wildcards (PS3.4 C.2.2.2.2)
    TEXT = "text"  # single value or * ? wildcards, case-sensitive
    NAME = "name"  # PN: as TEXT, but ASCII letters match regardless of case (PS3.4 C.2.2.2.1 allows it)
    DATE = "date"  # YYYYMMDD or a range with open ends
    TIME = "time"  # HH[MM[SS[.F]]] or a range, to the second
    NUMBER = "number"  # IS: one integer
    CODES = "codes"  # ModalitiesInStudy: any of a list of code strings


# The attributes this service can match, by level; anything else is refused.
KEYS: dict[str, tuple[Level, Kind]] = {
    "StudyInstanceUID": (Level.STUDY, Kind.UID),
    "PatientName": (Level.STUDY, Kind.NAME),
    "PatientID": (Level.STUDY, Kind.TEXT),
    "PatientBirthDate": (Level.STUDY, Kind.DATE),
    "PatientSex": (Level.STUDY, Kind.TEXT),
    "AccessionNumber": (Level.STUDY, Kind.TEXT),
    "StudyDate": (Level.STUDY, Kind.DATE),
    "StudyTime": (Level.STUDY, Kind.TIME),
    "StudyID": (Level.STUDY, Kind.TEXT),
    "StudyDescription": (Level.STUDY, Kind.TEXT),
    "ReferringPhysicianName": (Level.STUDY, Kind.NAME),
    "ModalitiesInStudy": (Level.STUDY, Kind.CODES),
    "SeriesInstanceUID": (Level.SERIES, Kind.UID),
    "Modality": (Level.SERIES, Kind.TEXT),
    "SeriesNumber": (Level.SERIES, Kind.NUMBER),
    "SeriesDescription": (Level.SERIES, Kind.TEXT),
    "SeriesDate": (Level.SERIES, Kind.DATE),
    "SOPInstanceUID": (Level.INSTANCE, Kind.UID),
    "SOPClassUID": (Level.INSTANCE, Kind.UID),
    "InstanceNumber": (Level.INSTANCE, Kind.NUMBER),
}


@dataclass(frozen=True)
class Match:
    """One matching key. `values` for UID and code lists and single values; `low`/`high` for ranges;
    `pattern` (DICOM * and ?) for wildcard matching."""

    keyword: str
    kind: Kind
    values: tuple[str, ...] = ()
    pattern: str | None = None
    low: str | None = None
    high: str | None = None


@dataclass(frozen=True)
class Query:
    resource: Resource
    matches: tuple[Match, ...]
    include_all: bool
    include: frozenset[str]  # keywords asked for by includefield, or as return keys (an empty value)
    limit: int
    offset: int


def keyword_of(attribute: str) -> str:
    """A keyword or an 8-digit tag, as a keyword; a sequence path or an unknown name is refused."""
    if "." in attribute:
        raise BadQuery(f"{attribute[:40]}: matching on sequence attributes (tag paths) is not supported")
    if _TAG.match(attribute):
        keyword = keyword_for_tag(int(attribute, 16))
        if not keyword:
            raise BadQuery(f"{attribute}: not a public DICOM attribute")
        return str(keyword)
    if tag_for_keyword(attribute) is None:
        raise BadQuery(f"{attribute[:40]}: not a DICOM attribute keyword or tag")
    return attribute


def _uids(keyword: str, value: str) -> Match:
    uids = tuple(u.strip() for u in re.split(r"[,\\]", value))
    if any(c in value for c in "*?"):
        raise BadQuery(f"{keyword}: wildcards are not allowed in UIDs")
    if len(uids) > MAX_UIDS or not all(len(u) <= 64 and _UID.match(u) for u in uids):
        raise BadQuery(f"{keyword}: a UID or a list of at most {MAX_UIDS} UIDs separated by , or \\")
    return Match(keyword, Kind.UID, values=uids)


def _text(keyword: str, kind: Kind, value: str) -> Match | None:
    if "\\" in value:
        raise BadQuery(f"{keyword}: one value only (multiple-value matching is not supported)")
    if len(value) > 324:  # a PN of three 64-character component groups fits; no stored value is longer
        raise BadQuery(f"{keyword}: value longer than 324 characters")
    if value.strip("*") == "":
        return None  # universal matching (PS3.4 C.2.2.2.3): matches every entity, with or without a value
    if "*" in value or "?" in value:
        return Match(keyword, kind, pattern=value)
    return Match(keyword, kind, values=(value,))


def _valid_date(keyword: str, date: str) -> str:
    try:
        datetime.strptime(date, "%Y%m%d")
    except ValueError:
        raise BadQuery(f"{keyword}: not a calendar date (YYYYMMDD)") from None
    return date


def _dates(keyword: str, value: str) -> Match:
    m = _DATE.match(value)
    if not m or not (m.group(1) or m.group(3)) or (m.group(3) and not m.group(2)):
        raise BadQuery(f"{keyword}: a date YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end may be open)")
    low = _valid_date(keyword, m.group(1)) if m.group(1) else None
    high = _valid_date(keyword, m.group(3)) if m.group(3) else None
    if not m.group(2):
        high = low
    if low and high and low > high:
        raise BadQuery(f"{keyword}: the range ends before it starts")
    return Match(keyword, Kind.DATE, low=low, high=high)


def _time_bound(keyword: str, value: str, upper: bool) -> str:
    """HHMMSS; a bound given to the hour or minute covers all of it when it is the upper one."""
    m = _TIME.match(value)
    if not m:
        raise BadQuery(f"{keyword}: a time HH[MM[SS[.FFFFFF]]] or a range of two")
    hh, mm, ss = m.group(1), m.group(2), m.group(3)
    if int(hh) > 23 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        raise BadQuery(f"{keyword}: not a time of day")
    fill = "59" if upper else "00"
    return hh + (mm or fill) + (ss or fill)


def _times(keyword: str, value: str) -> Match:
    low_s, dash, high_s = value.partition("-")
    if not (low_s or high_s) or "-" in high_s:
        raise BadQuery(f"{keyword}: a time HH[MM[SS[.FFFFFF]]] or a range of two")
    low = _time_bound(keyword, low_s, upper=False) if low_s else None
    high = _time_bound(keyword, high_s, upper=True) if high_s else None
    if not dash:  # a single time matches the whole of its precision
        high = _time_bound(keyword, low_s, upper=True)
    if low and high and low > high:
        raise BadQuery(f"{keyword}: the range ends before it starts (ranges across midnight are not supported)")
    return Match(keyword, Kind.TIME, low=low, high=high)


def _number(keyword: str, value: str) -> Match:
    if not re.fullmatch(r"[+-]?\d{1,10}", value.strip()):
        raise BadQuery(f"{keyword}: one integer (no ranges, lists or wildcards)")
    return Match(keyword, Kind.NUMBER, values=(str(int(value)),))


def _codes(keyword: str, value: str) -> Match:
    codes = tuple(c.strip() for c in re.split(r"[,\\]", value))
    if not all(_CODE.match(c) for c in codes):
        raise BadQuery(f"{keyword}: one or more code strings (A-Z, 0-9, _) separated by , or \\, no wildcards")
    return Match(keyword, Kind.CODES, values=codes)


def parse_match(keyword: str, value: str) -> Match | None:
    """The match for one attribute=value; None for universal matching."""
    kind = KEYS[keyword][1]
    if _CONTROL.search(value):
        raise BadQuery(f"{keyword}: control characters are not allowed in a value")
    if kind is Kind.UID:
        return _uids(keyword, value)
    if kind in (Kind.TEXT, Kind.NAME):
        return _text(keyword, kind, value)
    if kind is Kind.DATE:
        return _dates(keyword, value)
    if kind is Kind.TIME:
        return _times(keyword, value)
    if kind is Kind.NUMBER:
        return _number(keyword, value)
    return _codes(keyword, value)


def _integer(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\d{1,19}", value) or not low <= int(value) <= high:
        raise BadQuery(f"{name}: an integer from {low} to {high}")
    return int(value)


def _includefields(values: list[str]) -> tuple[bool, set[str]]:
    include_all, keywords = False, set()
    for item in (v.strip() for value in values for v in value.split(",")):
        if item == "all":
            include_all = True
        elif item:
            try:
                keywords.add(keyword_of(item))
            except BadQuery as exc:
                raise BadQuery(f"includefield: {exc}") from None
    return include_all, keywords


def _fuzzy(values: list[str]) -> None:
    if any(v.strip().lower() != "false" for v in values):
        raise BadQuery("fuzzymatching: only literal matching is supported (fuzzymatching=false)")


def parse_query(resource: Resource, items: list[tuple[str, str]]) -> Query:
    """Every query parameter of one QIDO-RS request, checked against what `resource` can match."""
    levels = RESOURCE_LEVELS[resource]
    matches: dict[str, Match | None] = {}
    include: list[str] = []
    limit: list[str] = []
    offset: list[str] = []
    fuzzy: list[str] = []
    for name, value in items:
        if name == "includefield":
            include.append(value)
        elif name in ("limit", "offset", "fuzzymatching"):
            {"limit": limit, "offset": offset, "fuzzymatching": fuzzy}[name].append(value)
        else:
            keyword = keyword_of(name)
            level = KEYS.get(keyword, (None, None))[0]
            if level is None:
                raise BadQuery(f"{keyword}: this service cannot match on it (it can: {', '.join(KEYS)})")
            if level not in levels:
                allowed = ", ".join(level.value for level in levels)
                raise BadQuery(f"{keyword}: a {level} attribute; this resource matches {allowed} attributes only")
            if keyword in matches:
                raise BadQuery(f"{keyword}: given more than once")
            matches[keyword] = parse_match(keyword, value) if value else None
    for name, given in (("limit", limit), ("offset", offset)):
        if len(given) > 1:
            raise BadQuery(f"{name}: given more than once")
    _fuzzy(fuzzy)
    include_all, keywords = _includefields(include)
    return Query(
        resource=resource,
        matches=tuple(m for m in matches.values() if m is not None),
        include_all=include_all,
        include=frozenset(keywords | set(matches)),  # matching keys are returned (PS3.18 10.6.3.3)
        limit=_integer("limit", limit[0], 1, MAX_LIMIT) if limit else DEFAULT_LIMIT,
        offset=_integer("offset", offset[0], 0, MAX_OFFSET) if offset else 0,
    )

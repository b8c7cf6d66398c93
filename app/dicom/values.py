"""Normalise the attributes ingest indexes, by their VR (DICOM PS3.5 6.2); refuse what cannot be normalised.

The stored file keeps the bytes the PACS sent; the database holds this normalised copy. Padding is removed
(leading and trailing spaces, trailing NULs) and the ACR-NEMA date form YYYY.MM.DD, which PS3.5 asks readers
to accept, is read as YYYYMMDD. Nothing is truncated or guessed: a PatientID cut to 64 characters could merge
two patients, a cut AccessionNumber could attach a report to another exam. So a value that still breaks its
VR fails its instance alone (0xA900). Messages name the attribute and the rule, never the value (PHI).
"""

from __future__ import annotations

import re
from datetime import datetime

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from app.services.failures import FailureReason, InvalidInstance

# Control characters are not allowed in LO/SH; ESC (0x1B) is, for ISO 2022 code extensions.
_CONTROL = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")
_LEGACY_DATE = re.compile(r"^\d{4}\.\d{2}\.\d{2}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
IS_RANGE = (-(2**31), 2**31 - 1)


def _refuse(keyword: str, rule: str) -> InvalidInstance:
    tag = pydicom.datadict.tag_for_keyword(keyword)
    return InvalidInstance(FailureReason.DATASET_MISMATCH, f"{keyword} ({tag:08X}) {rule}")


def _single(ds: Dataset, keyword: str) -> object | None:
    value = ds.get(keyword)
    if isinstance(value, MultiValue):  # a backslash inside a single-valued attribute
        if len(value) > 1:
            raise _refuse(keyword, "has more than one value")
        value = value[0] if len(value) else None
    return None if value is None or str(value).strip(" \x00") == "" else value


def text(ds: Dataset, keyword: str, max_chars: int) -> str | None:
    """A LO or SH value without its padding; None when empty."""
    value = _single(ds, keyword)
    if value is None:
        return None
    out = str(value).strip(" ").rstrip("\x00 ")
    if _CONTROL.search(out):
        raise _refuse(keyword, "contains a control character")
    if len(out) > max_chars:
        raise _refuse(keyword, f"is {len(out)} characters; its VR allows {max_chars}")
    return out


def date(ds: Dataset, keyword: str) -> str | None:
    """A DA value as YYYYMMDD (the ACR-NEMA form YYYY.MM.DD accepted); None when empty."""
    value = _single(ds, keyword)
    if value is None:
        return None
    out = str(value).strip(" \x00")
    if _LEGACY_DATE.match(out):
        out = out.replace(".", "")
    try:
        if len(out) != 8 or not out.isdigit():
            raise ValueError
        datetime.strptime(out, "%Y%m%d")
    except ValueError:
        raise _refuse(keyword, "is not a date (YYYYMMDD)") from None
    return out


def integer(ds: Dataset, keyword: str) -> int | None:
    """An IS value within the range PS3.5 gives IS; None when empty."""
    value = _single(ds, keyword)
    if value is None:
        return None
    try:
        number = int(str(value).strip(" \x00"))
    except ValueError:
        raise _refuse(keyword, "is not an integer string") from None
    if not IS_RANGE[0] <= number <= IS_RANGE[1]:
        raise _refuse(keyword, "is outside the range of IS (-2^31 to 2^31-1)")
    return number


def optional_uid(ds: Dataset, keyword: str) -> str | None:
    """A UI value without its padding, or None when absent."""
    value = _single(ds, keyword)
    if value is None:
        return None
    out = str(value).strip(" \x00")
    if len(out) > 64 or not _UID.match(out):
        raise _refuse(keyword, "is not a valid UID")
    return out

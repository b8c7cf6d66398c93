"""QIDO-RS and WADO-RS: DICOM JSON for query results, multipart for retrieval."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword

from app.db.tables import Instance, Series, Study
from app.dicom.parse import SERIES_TAGS, STUDY_TAGS

CHUNK = 1 << 20
ONLINE = {"vr": "CS", "Value": ["ONLINE"]}  # InstanceAvailability: everything stored is on local disk


def _tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


def _tags(*keywords: str) -> frozenset[str]:
    return frozenset(_tag(k) for k in keywords)


# PS3.18 tables 10.6.3-3 to -5: returned without includefield (the UIDs that place a result always are).
STUDY_DEFAULT = _tags(
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
    "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate",
    "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)  # fmt: skip
SERIES_DEFAULT = _tags(
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "RetrieveURL",
    "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence", "StudyInstanceUID",
)  # fmt: skip
INSTANCE_DEFAULT = _tags(
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
    "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID",
    "SeriesInstanceUID",
)  # fmt: skip
# What this service can return at all, by level: ingest keeps these (app.dicom.parse), the rest it counts.
STUDY_STORED = frozenset(STUDY_TAGS) | {
    "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "RetrieveURL",
    "InstanceAvailability",
}  # fmt: skip
SERIES_STORED = frozenset(SERIES_TAGS) | {"NumberOfSeriesRelatedInstances", "RetrieveURL", "InstanceAvailability"}
INSTANCE_STORED = frozenset({"SOPClassUID", "SOPInstanceUID", "InstanceNumber", "RetrieveURL",
                             "InstanceAvailability"})  # fmt: skip


def _ui(v: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [v]}


def _is(n: int) -> dict[str, Any]:
    return {"vr": "IS", "Value": [n]}


def study_json(study: Study, base: str, counts: tuple[int, int, list[str]] | None = None) -> dict[str, Any]:
    """Every study attribute this service has; `counts` (series, instances, modalities) at study level only."""
    out = dict(study.attributes)
    out.update({"0020000D": _ui(study.study_uid), "00080056": ONLINE,
                "00081190": {"vr": "UR", "Value": [f"{base}/dicomweb/studies/{study.study_uid}"]}})  # fmt: skip
    if counts is not None:
        n_series, n_instances, modalities = counts
        out.update({"00080061": {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"},
                    "00201206": _is(n_series), "00201208": _is(n_instances)})  # fmt: skip
    return out


def series_json(series: Series, study: Study, base: str) -> dict[str, Any]:
    out = dict(series.attributes)
    url = f"{base}/dicomweb/studies/{study.study_uid}/series/{series.series_uid}"
    out.update({"0020000D": _ui(study.study_uid), "0020000E": _ui(series.series_uid), "00080056": ONLINE,
                "00201209": _is(series.instance_count), "00081190": {"vr": "UR", "Value": [url]}})  # fmt: skip
    return out


def instance_json(inst: Instance, series: Series, study_uid: str, base: str) -> dict[str, Any]:
    url = f"{base}/dicomweb/studies/{study_uid}/series/{series.series_uid}/instances/{inst.sop_instance_uid}"
    out = {"00080016": _ui(inst.sop_class_uid), "00080018": _ui(inst.sop_instance_uid),
           "0020000D": _ui(study_uid), "0020000E": _ui(series.series_uid), "00080056": ONLINE,
           "00081190": {"vr": "UR", "Value": [url]}}  # fmt: skip
    if inst.instance_number is not None:
        out["00200013"] = _is(inst.instance_number)
    return out


def returned(attributes: dict[str, Any], defaults: frozenset[str], include: frozenset[str] | None) -> dict[str, Any]:
    """The attributes a QIDO-RS result carries: the defaults and those asked for (None: all), sorted by tag."""
    keep = None if include is None else defaults | include
    return {tag: attributes[tag] for tag in sorted(attributes) if keep is None or tag in keep}


def multipart_boundary() -> str:
    return f"gatekeeper-{uuid.uuid4().hex}"


def stream_parts(parts: list[tuple[bytes, str]], boundary: str) -> Iterator[bytes]:
    """multipart/related from in-memory parts, each (body, its Content-Type)."""
    for body, media in parts:
        yield f"--{boundary}\r\nContent-Type: {media}\r\n\r\n".encode()
        yield body
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def stream_multipart(paths: list[Path], boundary: str) -> Iterator[bytes]:
    """multipart/related; type="application/dicom", one part per file, read in chunks."""
    for path in paths:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as fp:
            while chunk := fp.read(CHUNK):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()

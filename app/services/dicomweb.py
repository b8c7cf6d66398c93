"""QIDO-RS and WADO-RS: DICOM JSON for query results, multipart for retrieval."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom

from app.core.errors import DomainError
from app.db.tables import Instance, Series, Study

_DATE_RANGE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")
CHUNK = 1 << 20


class BadQuery(DomainError, ValueError):
    pass


def parse_date_range(value: str | None) -> tuple[str | None, str | None]:
    """DICOM date matching: 'YYYYMMDD', 'A-B', 'A-' or '-B'."""
    if not value:
        return None, None
    m = _DATE_RANGE.match(value)
    if not m or not (m.group(1) or m.group(3)):
        raise BadQuery("StudyDate must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    if not m.group(2):
        return m.group(1), m.group(1)
    return m.group(1), m.group(3)


def _ui(v: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [v]}


def _is(n: int) -> dict[str, Any]:
    return {"vr": "IS", "Value": [n]}


def study_json(study: Study, n_series: int, n_instances: int, modalities: list[str], base: str) -> dict[str, Any]:
    out = dict(study.attributes)
    out.update({
        "0020000D": _ui(study.study_uid),
        "00080061": {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"},
        "00201206": _is(n_series),
        "00201208": _is(n_instances),
        "00081190": {"vr": "UR", "Value": [f"{base}/dicomweb/studies/{study.study_uid}"]},
    })  # fmt: skip
    return out


def series_json(series: Series, study: Study, base: str) -> dict[str, Any]:
    out = dict(series.attributes)
    url = f"{base}/dicomweb/studies/{study.study_uid}/series/{series.series_uid}"
    out.update({"0020000D": _ui(study.study_uid), "0020000E": _ui(series.series_uid),
                "00201209": _is(series.instance_count), "00081190": {"vr": "UR", "Value": [url]}})  # fmt: skip
    return out


def instance_json(inst: Instance, series: Series, study_uid: str, base: str) -> dict[str, Any]:
    url = f"{base}/dicomweb/studies/{study_uid}/series/{series.series_uid}/instances/{inst.sop_instance_uid}"
    out = {"00080016": _ui(inst.sop_class_uid), "00080018": _ui(inst.sop_instance_uid),
           "0020000D": _ui(study_uid), "0020000E": _ui(series.series_uid),
           "00081190": {"vr": "UR", "Value": [url]}}  # fmt: skip
    if inst.instance_number is not None:
        out["00200013"] = _is(inst.instance_number)
    return out


def metadata_json(path: Path, bulk_url: str) -> dict[str, Any]:
    """The header as DICOM JSON; pixel data is referenced, not inlined."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=lambda _e: bulk_url)
    out["7FE00010"] = {"vr": "OW", "BulkDataURI": bulk_url}
    return out


def multipart_boundary() -> str:
    return f"gatekeeper-{uuid.uuid4().hex}"


def stream_multipart(paths: list[Path], boundary: str) -> Iterator[bytes]:
    """multipart/related; type="application/dicom", one part per file, read in chunks."""
    for path in paths:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as fp:
            while chunk := fp.read(CHUNK):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()

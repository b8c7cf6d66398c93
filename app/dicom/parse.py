"""Read a received DICOM file defensively and extract what ingest needs.

Hostile input must stay cheap and never crash the process (REFERENCES.md,
"pydicom hazards"): deflated transfer syntaxes are refused before anything is
inflated, sizes are checked before pixel data is trusted, and parser failures
(RecursionError from nested sequences, MemoryError, EOF) become a failure reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from app.dicom import values as dicom_values
from app.services.failures import FailureReason, InvalidInstance

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
}
ENCAPSULATED_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
}
# Validation warnings quote element values (names, IDs): never let them reach a log.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_ITEM, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)

# Kept for QIDO-RS; copied as DICOM JSON. These are PHI: stored, never logged.
STUDY_TAGS = [
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName",
]  # fmt: skip
SERIES_TAGS = ["SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate"]


@dataclass(frozen=True)
class InstanceHeader:
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    modality: str
    instance_number: int | None
    # Normalised copies for the index and the identity rules (app/services/identity.py); the file keeps
    # the original bytes.
    patient_id: str | None
    study_date: str | None
    accession_number: str | None
    issuer_of_patient_id: str | None = None
    frame_of_reference_uid: str | None = None
    study_attributes: dict[str, Any] = field(default_factory=dict)
    series_attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParseLimits:
    max_pixel_bytes: int = 512 * 1024**2
    max_sequence_depth: int = 16


def _uid(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        tag = pydicom.datadict.tag_for_keyword(keyword)
        raise InvalidInstance(FailureReason.DATASET_MISMATCH, f"missing required attribute {keyword} ({tag:08X})")
    uid = str(value).strip().rstrip("\x00")
    if len(uid) > 64 or not _UID_RE.match(uid):
        raise InvalidInstance(FailureReason.DATASET_MISMATCH, f"{keyword} is not a valid UID")
    return uid


def _depth(ds: Dataset, limit: int, level: int = 0) -> None:
    if level > limit:
        raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, f"sequences nested deeper than {limit} levels")
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _depth(item, limit, level + 1)


def _read(path: Path) -> Dataset:
    with path.open("rb") as fp:
        preamble = fp.read(132)
        if len(preamble) < 132 or preamble[128:132] != b"DICM":
            raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, "not a DICOM Part 10 file (no DICM prefix)")
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        syntax = str(meta.get("TransferSyntaxUID", "")).strip("\x00 ")
    except Exception as exc:  # noqa: BLE001 - any parser error is bad input
        raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, f"unreadable file meta: {type(exc).__name__}")
    if not syntax:
        raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, "file meta has no TransferSyntaxUID (0002,0010)")
    if syntax not in NATIVE_SYNTAXES | ENCAPSULATED_SYNTAXES:
        # Deflated syntaxes are refused here, before pydicom would inflate them unbounded.
        raise InvalidInstance(FailureReason.TRANSFER_SYNTAX, f"transfer syntax {syntax[:64]} not supported")
    try:
        return pydicom.dcmread(path)
    except RecursionError:
        raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, "sequences nested too deeply to parse")
    except MemoryError:
        raise InvalidInstance(FailureReason.OUT_OF_RESOURCES, "a declared element length is too large")
    except Exception as exc:  # noqa: BLE001 - hostile bytes raise anything (struct.error seen in the fuzz corpus)
        raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, f"unparseable data set: {type(exc).__name__}")


def _check_encapsulated(data: bytes) -> None:
    """Every item of encapsulated pixel data must be whole (a cut file is not)."""
    pos, n = 0, len(data)
    while pos + 8 <= n:
        group, elem = int.from_bytes(data[pos : pos + 2], "little"), int.from_bytes(data[pos + 2 : pos + 4], "little")
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if (group, elem) == _SEQ_END:
            return
        if (group, elem) != _ITEM or pos + 8 + length > n:
            raise InvalidInstance(FailureReason.DATASET_MISMATCH, "encapsulated pixel data is truncated or malformed")
        pos += 8 + length
    if pos != n:
        raise InvalidInstance(FailureReason.DATASET_MISMATCH, "encapsulated pixel data is truncated")


def _check_pixels(ds: Dataset, syntax: str, limits: ParseLimits) -> None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits, samples = int(ds.BitsAllocated), int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise InvalidInstance(FailureReason.DATASET_MISMATCH, "missing or invalid Rows, Columns or BitsAllocated")
    if min(rows, cols, bits, samples, frames) <= 0 or bits not in (8, 16, 32):
        raise InvalidInstance(FailureReason.DATASET_MISMATCH, "invalid image dimensions or BitsAllocated")
    expected = rows * cols * samples * frames * bits // 8
    if expected > limits.max_pixel_bytes:
        raise InvalidInstance(FailureReason.OUT_OF_RESOURCES, f"image of {expected} bytes exceeds the pixel limit")
    data = ds.get("PixelData")
    if data is None:
        raise InvalidInstance(FailureReason.DATASET_MISMATCH, "no PixelData (7FE0,0010)")
    if syntax in NATIVE_SYNTAXES:
        if len(data) not in (expected, expected + 1):
            raise InvalidInstance(
                FailureReason.DATASET_MISMATCH, f"PixelData has {len(data)} bytes, Rows x Columns needs {expected}"
            )
    else:
        _check_encapsulated(data)


def _json(ds: Dataset, keywords: list[str]) -> dict[str, Any]:
    sub = Dataset()
    for kw in keywords:
        if kw in ds:
            sub[kw] = ds[kw]
    return sub.to_json_dict()


def parse_instance(path: Path, limits: ParseLimits | None = None) -> InstanceHeader:
    """Validate one received file; raise InvalidInstance with a precise reason."""
    limits = limits or ParseLimits()
    ds = _read(path)
    try:
        _depth(ds, limits.max_sequence_depth)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        sop_class = _uid(ds, "SOPClassUID")
        sop_uid = _uid(ds, "SOPInstanceUID")
        meta_uid = str(ds.file_meta.get("MediaStorageSOPInstanceUID", sop_uid)).strip().rstrip("\x00")
        if meta_uid != sop_uid:
            raise InvalidInstance(
                FailureReason.DATASET_MISMATCH, "MediaStorageSOPInstanceUID differs from SOPInstanceUID"
            )
        meta_class = str(ds.file_meta.get("MediaStorageSOPClassUID", sop_class)).strip().rstrip("\x00")
        if meta_class != sop_class:  # for a C-STORE: the request's Affected SOP Class UID
            raise InvalidInstance(FailureReason.DATASET_MISMATCH, "MediaStorageSOPClassUID differs from SOPClassUID")
        study_uid, series_uid = _uid(ds, "StudyInstanceUID"), _uid(ds, "SeriesInstanceUID")
        if sop_class != CT_IMAGE_STORAGE:
            raise InvalidInstance(
                FailureReason.SOP_CLASS_NOT_SUPPORTED,
                f"SOP class {UID(sop_class).name} not supported: CT Image Storage only",
            )
        modality = str(ds.get("Modality", "")).strip()
        if modality != "CT":
            raise InvalidInstance(FailureReason.DATASET_MISMATCH, f"Modality {modality or '(empty)'} in a CT image")
        _check_pixels(ds, syntax, limits)
        return InstanceHeader(
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            study_uid=study_uid,
            series_uid=series_uid,
            transfer_syntax_uid=syntax,
            modality=modality,
            instance_number=dicom_values.integer(ds, "InstanceNumber"),
            patient_id=dicom_values.text(ds, "PatientID", 64),
            study_date=dicom_values.date(ds, "StudyDate"),
            accession_number=dicom_values.text(ds, "AccessionNumber", 16),
            issuer_of_patient_id=dicom_values.text(ds, "IssuerOfPatientID", 64),
            frame_of_reference_uid=dicom_values.optional_uid(ds, "FrameOfReferenceUID"),
            study_attributes=_json(ds, STUDY_TAGS),
            series_attributes=_json(ds, SERIES_TAGS),
        )
    except InvalidInstance:
        raise
    except RecursionError:
        raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, "sequences nested too deeply to parse")
    except MemoryError:
        raise InvalidInstance(FailureReason.OUT_OF_RESOURCES, "a declared element length is too large")
    except Exception as exc:  # noqa: BLE001 - lazy element decoding of hostile bytes can raise anything
        raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, f"unparseable element: {type(exc).__name__}")

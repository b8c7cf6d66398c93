"""A radiologist's contour stored by STOW-RS: a DICOM SEG (drawn or corrected in OHIF, 3D Slicer...) taken as
the contour of the case its sender holds, exactly as an upload to ``/queue/{id}/contour`` is. Binary SEGs
(Segmentation Storage) and label maps (Label Map Segmentation Storage, OHIF 3.13's default, RLE Lossless).

The SEG names its series (ReferencedSeriesSequence); the case of that series' current revision must be
claimed by the sender, and the SEG must lie on the series' grid in its frame of reference
(``labeling.submit_contour`` checks the grid, its instances and the liver segment). An accepted SEG is
also kept as a derived instance of the study, so QIDO-RS and WADO-RS serve it over the CT (a viewer shows
it) and a configured PACS receives this very SEG. Each refusal is one STOW failure with a precise
ErrorComment (at most 64 characters, no UID or name). A SEG derived from the auto-segmentation's SEG
references the same series and is accepted the same way: correcting beats redrawing.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import session_scope
from app.core.security import Role
from app.db import cases, deliveries, reads
from app.db.states import SeriesStatus
from app.db.tables import Case, Instance, Series
from app.dicom.parse import SERIES_TAGS, ParseLimits
from app.services import audit, labeling
from app.services.derived import add_derived_instance
from app.services.failures import FailureReason
from app.services.ingest import Outcome, ingest_files
from app.services.storage import InstanceStore, ReceivedFile

log = logging.getLogger(__name__)
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"  # what OHIF 3.13 stores by default (RLE Lossless)
SEG_CLASSES = frozenset({SEG_STORAGE, LABEL_MAP_SEG_STORAGE})
_UIDS = re.compile(r"\d+(\.\d+){2,}")
COMMENT = 64  # ErrorComment is an LO


class Refused(Exception):
    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _header(received: ReceivedFile, limits: ParseLimits) -> Dataset:
    try:
        meta = pydicom.filereader.read_file_meta_info(received.path)
        syntax = str(meta.get("TransferSyntaxUID", ""))
        if syntax.startswith("1.2.840.10008.1.2.1.99"):
            raise Refused(FailureReason.TRANSFER_SYNTAX, "deflated SEGs are refused: send Explicit VR LE")
        return pydicom.dcmread(received.path, stop_before_pixels=True, defer_size=labeling.SEG_DEFER_BYTES)
    except Refused:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes can raise anything while parsing
        raise Refused(FailureReason.CANNOT_UNDERSTAND, f"not a readable DICOM file ({type(exc).__name__})") from None


def _referenced_series(seg: Dataset) -> str:
    uids = {str(item.get("SeriesInstanceUID", "")) for item in seg.get("ReferencedSeriesSequence", [])}
    if len(uids) != 1 or "" in uids:
        raise Refused(FailureReason.DATASET_MISMATCH, f"ReferencedSeriesSequence names {len(uids)} series, not 1")
    return uids.pop()


def _held_case(session, series: Series, reader: str) -> Case:  # type: ignore[no-untyped-def]
    """The case of the series' current revision, claimed by ``reader`` with a live lease; else Refused."""
    now = datetime.now(UTC)
    case = cases.of_series(session, series_id=series.id, revision=series.revision)
    if case is None or case.status not in (cases.OPEN, cases.CLAIMED):
        held = cases.held_by_reader(session, reader=reader, now=now)
        message = f"series of no open case; you hold case {held[0]}" if held else "the series has no open case"
        raise Refused(FailureReason.NO_CLAIMED_CASE, message)
    live = case.status == cases.CLAIMED and case.lease_until >= now  # type: ignore[operator]
    if live and case.claimed_by != reader:
        raise Refused(FailureReason.NO_CLAIMED_CASE, f"case {case.id} is claimed by another reader")
    if not live:
        raise Refused(FailureReason.NO_CLAIMED_CASE, f"claim case {case.id} first (it is not claimed by you)")
    return case


def _check_identity(session, seg: Dataset, series: Series) -> None:  # type: ignore[no-untyped-def]
    study_uid = reads.study_uid_of(session, series.study_id)
    if str(seg.get("StudyInstanceUID", "")) != study_uid:
        raise Refused(FailureReason.STUDY_MISMATCH, "StudyInstanceUID differs from the referenced series'")
    if str(seg.get("FrameOfReferenceUID", "")) != (series.frame_of_reference_uid or ""):
        raise Refused(FailureReason.DATASET_MISMATCH, "FrameOfReferenceUID differs from the series'")
    sop_uid = str(seg.get("SOPInstanceUID", ""))
    if session.scalar(select(Instance.id).where(Instance.sop_instance_uid == sop_uid)) is not None:
        raise Refused(FailureReason.DUPLICATE_CONFLICT, "SOPInstanceUID already stored: a new SEG needs a new one")
    own = reads.series_by_uid(session, str(seg.get("SeriesInstanceUID", "")))
    if own is not None and (own.status != SeriesStatus.DERIVED or own.study_id != series.study_id):
        raise Refused(FailureReason.SERIES_CONFLICT, "SeriesInstanceUID is that of another series")


def _accept(session, settings: Settings, store: InstanceStore, received: ReceivedFile, seg: Dataset,
            reader: str) -> Outcome:  # type: ignore[no-untyped-def]  # fmt: skip
    sop_class = str(seg.get("SOPClassUID", ""))
    if sop_class not in SEG_CLASSES or str(seg.get("Modality", "")) != "SEG":
        raise Refused(FailureReason.SOP_CLASS_NOT_SUPPORTED, "a radiologist stores DICOM SEG contours only")
    series = reads.series_by_uid(session, _referenced_series(seg))
    if series is None or series.status == SeriesStatus.DERIVED:
        raise Refused(FailureReason.DATASET_MISMATCH, "the SEG references a series this service does not hold")
    _check_identity(session, seg, series)
    case = _held_case(session, series, reader)
    try:
        case = labeling.submit_contour(session=session, settings=settings, case_id=case.id, reader=reader,
                                       upload=received.path, content_type="application/dicom")  # fmt: skip
    except labeling.InvalidContour as exc:
        raise Refused(FailureReason.DATASET_MISMATCH, _UIDS.sub("<uid>", str(exc))) from None
    except labeling.CaseUnavailable as exc:
        raise Refused(FailureReason.NO_CLAIMED_CASE, str(exc)[:COMMENT]) from None
    contour = case.contour_path
    relative = store.promote(received, group="derived")
    try:
        store.sync_dirs([relative])
        sop_uid = str(seg.SOPInstanceUID)
        attributes = {k: v for k, v in seg.to_json_dict().items() if k in _SERIES_TAG_HEX}
        add_derived_instance(session, study_id=series.study_id, series_uid=str(seg.SeriesInstanceUID),
                             sop_uid=sop_uid, sop_class_uid=sop_class, modality="SEG", relative=relative,
                             sha256=received.sha256, size=received.size, attributes=attributes,
                             transfer_syntax_uid=str(seg.file_meta.TransferSyntaxUID))  # fmt: skip
        deliveries.attach_case_seg(session, case_id=case.id, seg_path=relative, seg_sop_uid=sop_uid)
        audit.record(session, actor=reader, action="case.contour_stored_by_stow", entity_type="case",
                     entity_id=case.id)  # fmt: skip
        session.commit()
    except BaseException:
        store.remove(relative)
        if contour:
            (settings.storage_dir / contour).unlink(missing_ok=True)
        raise
    study_uid = str(seg.StudyInstanceUID)
    return Outcome(sop_class, sop_uid, study_uid, str(seg.SeriesInstanceUID), stored=True)


_SERIES_TAG_HEX = frozenset(f"{pydicom.datadict.tag_for_keyword(k):08X}" for k in SERIES_TAGS)


def store_contour(*, settings: Settings, store: InstanceStore, received: ReceivedFile, reader: str,
                  expected_study: str | None, limits: ParseLimits) -> Outcome:  # fmt: skip
    """One SEG part: accepted as the contour of the sender's case (stored, case submitted) or refused."""
    seg: Dataset | None = None
    try:
        seg = _header(received, limits)
        if expected_study and str(seg.get("StudyInstanceUID", "")) != expected_study:
            raise Refused(FailureReason.STUDY_MISMATCH, "StudyInstanceUID differs from the URL")
        store.sync_files([received.path])
        with session_scope() as session:
            return _accept(session, settings, store, received, seg, reader)
    except Refused as exc:
        log.info("contour SEG refused: %s", FailureReason(exc.reason).name)
        return Outcome(str(seg.get("SOPClassUID", "")) if seg is not None else None,
                       str(seg.get("SOPInstanceUID", "")) if seg is not None else None,
                       reason=exc.reason, message=exc.message[:COMMENT])  # fmt: skip


def is_contour_part(role: Role, received: ReceivedFile) -> bool:
    """A radiologist's parts are all contours; an admin's SEG parts are; a PACS's never (its SEG is refused)."""
    if role == Role.RADIOLOGIST:
        return True
    if role != Role.ADMIN:
        return False
    try:
        meta = pydicom.filereader.read_file_meta_info(received.path)
    except Exception:  # noqa: BLE001 - an unreadable part goes to ingest, which refuses it precisely
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) in SEG_CLASSES


def store_parts(*, settings: Settings, store: InstanceStore, files: list[ReceivedFile], role: Role, actor: str,
                expected_study: str | None, limits: ParseLimits) -> list[Outcome]:  # fmt: skip
    """One STOW request's files: contours by ``store_contour``, images by ``ingest_files``; outcomes in order."""
    contour = [is_contour_part(role, f) for f in files]
    images = [f for f, c in zip(files, contour, strict=True) if not c]
    outcomes = iter(ingest_files(store=store, files=images, expected_study=expected_study, actor=actor,
                                 limits=limits) if images else [])  # fmt: skip
    out = []
    try:
        for received, is_contour in zip(files, contour, strict=True):
            if is_contour:
                out.append(store_contour(settings=settings, store=store, received=received, reader=actor,
                                         expected_study=expected_study, limits=limits))  # fmt: skip
            else:
                out.append(next(outcomes))
    finally:
        for received in files:
            received.path.unlink(missing_ok=True)
    return out

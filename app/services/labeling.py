"""The manual contouring queue: list, claim (with a lease), release, submit a contour, reject.

A reader sees available cases and their own claims, nothing else; a case
claimed by one reader cannot be taken by another until the lease lapses.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.errors import Conflict, Invalid, NotFound
from app.db import cases, decisions
from app.db.tables import Case, Series
from app.services import audit, delivery, splits


class CaseNotFound(NotFound):
    pass


class CaseUnavailable(Conflict):
    """Claimed by someone else, already finished, or the lease lapsed (409)."""


class InvalidContour(Invalid):
    """The submitted contour does not lie on the series' grid (422)."""


SEG_DEFER_BYTES = 1024**2  # header read: larger elements stay on disk until asked for
SEG_HEADER_BYTES = 16 * 1024**2  # what a SEG may hold besides its frames and their functional groups


@dataclass
class CaseView:
    case: Case
    series_uid: str
    study_uid: str
    position: int | None  # None for a case the reader holds


def list_queue(*, session: Session, reader: str, limit: int = 100) -> list[CaseView]:
    now = datetime.now(UTC)
    out = []
    for case, series_uid, study_uid in cases.visible_cases(session, reader=reader, now=now, limit=limit):
        mine = case.status == cases.CLAIMED and case.claimed_by == reader and case.lease_until >= now  # type: ignore[operator]
        out.append(CaseView(case, series_uid, study_uid, None if mine else cases.position(session, case, now)))
    return out


def get_case(*, session: Session, case_id: int, reader: str) -> CaseView:
    """A case the reader may see: available, or claimed by this reader."""
    for view in list_queue(session=session, reader=reader, limit=10_000):
        if view.case.id == case_id:
            return view
    raise CaseNotFound(f"case {case_id} is not in your queue")


def claim_case(*, session: Session, case_id: int, reader: str, lease_s: float) -> Case:
    if not cases.claim(session, case_id=case_id, reader=reader, now=datetime.now(UTC), lease_s=lease_s):
        if session.get(Case, case_id) is None:
            raise CaseNotFound(f"no case {case_id}")
        raise CaseUnavailable(f"case {case_id} is claimed by another reader or already closed")
    audit.record(session, actor=reader, action="case.claimed", entity_type="case", entity_id=case_id)
    return session.get(Case, case_id)  # type: ignore[return-value]


def claim_next_case(*, session: Session, reader: str, lease_s: float) -> Case:
    case_id = cases.next_available_id(session, datetime.now(UTC))
    if case_id is None:
        raise CaseNotFound("the queue is empty")
    return claim_case(session=session, case_id=case_id, reader=reader, lease_s=lease_s)


def _own(session: Session, case_id: int, reader: str, status: str, action: str, **values: object) -> Case:
    if not cases.move_own(session, case_id=case_id, reader=reader, now=datetime.now(UTC), status=status, **values):
        raise CaseUnavailable(f"case {case_id} is not claimed by you (or your lease lapsed)")
    audit.record(session, actor=reader, action=action, entity_type="case", entity_id=case_id)
    return session.get(Case, case_id)  # type: ignore[return-value]


def release_case(*, session: Session, case_id: int, reader: str) -> Case:
    return _own(session, case_id, reader, cases.OPEN, "case.released", claimed_by=None, lease_until=None)


def reject_case(*, session: Session, case_id: int, reader: str, reason: str) -> Case:
    return _own(session, case_id, reader, cases.REJECTED, "case.rejected", reject_reason=reason)


def supersede_cases(*, session: Session, series_id: int, revision: int, actor: str) -> list[int]:
    """A late instance re-opened the series as ``revision``: its earlier revisions' open or claimed cases
    close (a reader's claim on one ends: its contour would describe another volume)."""
    closed = cases.supersede(session, series_id=series_id, revision=revision, now=datetime.now(UTC))
    for case_id in closed:
        audit.record(session, actor=actor, action="case.superseded", entity_type="case", entity_id=case_id,
                     revision=revision)  # fmt: skip
    return closed


def submit_contour(
    *, session: Session, settings: Settings, case_id: int, reader: str, upload: Path, content_type: str
) -> Case:
    """Validate a SEG or NIfTI mask (``upload``, on disk) against the series' grid, store it as NIfTI, close
    the case, all under the claim it was checked with: if the lease lapsed and another reader claimed the
    case meanwhile, nothing is stored and the case keeps naming the other reader's contour. The contour's
    delivery to the PACS (as a SEG) is written in the same transaction."""
    storage_dir = settings.storage_dir
    case = session.get(Case, case_id)
    now = datetime.now(UTC)
    if case is None or case.status != cases.CLAIMED or case.claimed_by != reader or case.lease_until < now:  # type: ignore[operator]
        raise CaseUnavailable(f"case {case_id} is not claimed by you (or your lease lapsed)")
    claim_version, revision = case.claim_version, case.revision
    series = session.get(Series, case.series_id)
    assert series is not None
    mask, geometry = _read_contour(session, series, upload, content_type)
    # A name of its own per attempt: a submit that loses the race below deletes its file and no other.
    relative = f"labels/case-{case_id}-r{revision}-c{claim_version}-{secrets.token_hex(4)}.nii.gz"
    (storage_dir / "labels").mkdir(parents=True, exist_ok=True)
    from app.dicom.seg import write_nifti

    write_nifti(mask, geometry, storage_dir / relative, allow_gaps=True)
    try:
        if not cases.submit(session, case_id=case_id, reader=reader, claim_version=claim_version,
                        now=datetime.now(UTC), path=relative):  # fmt: skip
            raise CaseUnavailable(f"case {case_id} is no longer claimed by you (your lease lapsed while the "
                                  "contour was checked); your contour was not stored")  # fmt: skip
        audit.record(session, actor=reader, action="case.contour_submitted", entity_type="case", entity_id=case_id)
        splits.assign(session, series=series)
        delivery.enqueue_contour_seg(session, settings, series_id=series.id, revision=revision, case_id=case_id)
    except BaseException:
        (storage_dir / relative).unlink(missing_ok=True)
        raise
    return session.get(Case, case_id)  # type: ignore[return-value]


NIFTI_TYPES = ("application/gzip", "application/x-gzip", "application/octet-stream")


def _read_contour(session: Session, series: Series, upload: Path, content_type: str):  # type: ignore[no-untyped-def]
    """Headers are checked against the series' grid before any pixel data is decoded or inflated."""
    from app.dicom.seg import read_nifti_mask
    from app.dicom.volume import SeriesGeometry

    if not series.geometry:
        raise InvalidContour("the series has no recorded geometry yet")
    g = dict(series.geometry)
    geometry = SeriesGeometry(**{**g, "pixel_spacing_mm": tuple(g["pixel_spacing_mm"])})
    try:
        if content_type.startswith("application/dicom"):
            mask = _read_seg(session, series, upload)
        elif content_type in NIFTI_TYPES:
            mask = read_nifti_mask(upload, geometry, label="contour")
        else:
            raise InvalidContour(f"unsupported contour media type {content_type[:40]}: use application/dicom (SEG)"
                                 " or application/gzip (NIfTI)")  # fmt: skip
    except InvalidContour:
        raise
    except Exception as exc:  # noqa: BLE001 - every reading or validation failure is the submitter's to fix
        raise InvalidContour(str(exc)[:300] or type(exc).__name__) from None
    if mask.shape != (geometry.n_slices, geometry.rows, geometry.columns):
        raise InvalidContour(f"mask shape {mask.shape} differs from the series grid")
    return mask, geometry


def _read_seg(session: Session, series: Series, upload: Path) -> np.ndarray:
    """Transfer syntax from the file meta first (a deflated data set would be inflated whole, unbounded), then
    the header without pixel data against the series, then the file's size against what that header allows."""
    from app.dicom.parse import ENCAPSULATED_SYNTAXES, NATIVE_SYNTAXES
    from app.dicom.seg import check_seg_against_series, read_seg_mask
    from app.dicom.volume import order_and_check

    syntax = str(pydicom.filereader.read_file_meta_info(upload).get("TransferSyntaxUID", "")).strip("\x00 ")
    if syntax not in NATIVE_SYNTAXES | ENCAPSULATED_SYNTAXES:
        raise InvalidContour(f"SEG transfer syntax {syntax[:64]!r} not supported (deflated SEGs are refused): "
                             "send it as Explicit VR Little Endian")  # fmt: skip
    sources = _source_headers(session, series)
    order, _ = order_and_check(sources)
    ordered = [sources[i] for i in order]
    header = pydicom.dcmread(upload, stop_before_pixels=True, defer_size=SEG_DEFER_BYTES)
    check_seg_against_series(header, ordered)
    frames, bits = int(header.NumberOfFrames), int(header.get("BitsAllocated", 1) or 1)
    allowed = frames * int(header.Rows) * int(header.Columns) * bits // 8 + SEG_HEADER_BYTES + frames * 4096
    if upload.stat().st_size > allowed:
        raise InvalidContour(f"SEG file is {upload.stat().st_size} bytes, more than its {frames} frames of "
                             f"{int(header.Rows)} x {int(header.Columns)} can hold ({allowed} bytes)")  # fmt: skip
    return read_seg_mask(pydicom.dcmread(upload), ordered)


def _source_headers(session: Session, series: Series) -> list[pydicom.Dataset]:
    from app.db import reads

    root = get_settings().storage_dir
    return [pydicom.dcmread(root / p, stop_before_pixels=True) for p in reads.instance_paths(session, series.id)]


def evidence_of(*, session: Session, case: Case) -> tuple[str | None, dict]:
    """The evidence of the case's own revision (none when that revision was never scored, e.g. it failed)."""
    decision = decisions.latest_decision(session, case.series_id, revision=case.revision)
    if decision is None:
        return None, {}
    series = session.get(Series, case.series_id)
    summary = {"series_score": decision.series_score, "threshold": decision.threshold, "reason": decision.reason,
               "slice_scores": decision.slice_scores, "scorer_version_id": decision.scorer_version_id,
               "segmenter_version_id": decision.segmenter_version_id,
               "detail": series.last_error if series is not None else None}  # fmt: skip
    summary.update(_risk_evidence(decision.evidence_path))
    return decision.evidence_path, summary


def _risk_evidence(relative: str | None) -> dict:
    """The second signal's per-slice risk, its threshold and the flagged slices, when the evidence has them."""
    path = get_settings().storage_dir / relative if relative else None
    if path is None or not path.exists():
        return {}
    with np.load(path) as ev:
        if "slice_risk" not in ev.files:
            return {}
        threshold = float(ev["risk_threshold"])
        return {"slice_risk": [round(float(r), 5) for r in ev["slice_risk"]],
                "risk_threshold": threshold if np.isfinite(threshold) else None,
                "risk_flagged_slices": [int(i) for i in np.flatnonzero(ev["risk_flagged"])]}  # fmt: skip

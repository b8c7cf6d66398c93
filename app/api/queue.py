"""The manual contouring queue, for radiologists."""

from __future__ import annotations

import pathlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.api.deps import MAX_ROW_ID, NO_NUL, RadiologistPrincipal, SessionDep, SettingsDep, StoreDep
from app.api.stow import check_declared_length
from app.services import labeling
from app.services.storage import InstanceStore

router = APIRouter(prefix="/queue", tags=["queue"])
CaseId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
MAX_CONTOUR_BYTES = 512 * 1024**2  # or the body limit (GATEKEEPER_MAX_BODY_BYTES) when lower


class CaseOut(BaseModel):
    id: int
    status: str
    reason: str
    priority: float | None
    position: int | None
    series_uid: str
    study_uid: str
    claimed_by_me: bool
    lease_until: datetime | None
    created_at: datetime


class CaseDetail(CaseOut):
    evidence: dict[str, Any]
    evidence_png: str | None


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500, pattern=NO_NUL)


def _out(view: labeling.CaseView, reader: str) -> CaseOut:
    c = view.case
    priority = c.priority if c.priority != float("inf") else None  # JSON has no infinity: None means "first"
    return CaseOut(id=c.id, status=c.status, reason=c.reason, priority=priority, position=view.position,
                   series_uid=view.series_uid, study_uid=view.study_uid, claimed_by_me=c.claimed_by == reader,
                   lease_until=c.lease_until, created_at=c.created_at)  # fmt: skip


@router.get("", summary="Cases available to me (by priority, then age) and the ones I hold")
def list_cases(reader: RadiologistPrincipal, db: SessionDep) -> list[CaseOut]:
    return [_out(v, reader.name) for v in labeling.list_queue(session=db, reader=reader.name)]


@router.get("/{case_id}", summary="One case with its evidence (score profile, top slices)")
def read_case(case_id: CaseId, reader: RadiologistPrincipal, db: SessionDep) -> CaseDetail:
    view = labeling.get_case(session=db, case_id=case_id, reader=reader.name)
    path, summary = labeling.evidence_of(session=db, case=view.case)
    png = f"/queue/{case_id}/evidence.png" if path else None
    return CaseDetail(**_out(view, reader.name).model_dump(), evidence=summary, evidence_png=png)


@router.get("/{case_id}/evidence.png", summary="Score profile and residual heat-maps of the top slices")
def evidence_png(case_id: CaseId, reader: RadiologistPrincipal, db: SessionDep, settings: SettingsDep) -> Response:
    view = labeling.get_case(session=db, case_id=case_id, reader=reader.name)
    path, _ = labeling.evidence_of(session=db, case=view.case)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this case has no anomaly evidence (no working scorer)")
    from app.services.evidence import render_png

    return Response(render_png(settings.storage_dir / path), media_type="image/png")


@router.post("/next", summary="Claim the highest-priority available case")
def claim_next(reader: RadiologistPrincipal, db: SessionDep, settings: SettingsDep) -> CaseOut:
    case = labeling.claim_next_case(session=db, reader=reader.name, lease_s=settings.claim_lease_s)
    return _out(labeling.get_case(session=db, case_id=case.id, reader=reader.name), reader.name)


@router.post("/{case_id}/claim", summary="Claim a case (or renew my lease on it)")
def claim(case_id: CaseId, reader: RadiologistPrincipal, db: SessionDep, settings: SettingsDep) -> CaseOut:
    labeling.claim_case(session=db, case_id=case_id, reader=reader.name, lease_s=settings.claim_lease_s)
    return _out(labeling.get_case(session=db, case_id=case_id, reader=reader.name), reader.name)


@router.post("/{case_id}/release", summary="Give a claimed case back to the queue")
def release(case_id: CaseId, reader: RadiologistPrincipal, db: SessionDep) -> dict[str, str]:
    case = labeling.release_case(session=db, case_id=case_id, reader=reader.name)
    return {"status": case.status}


@router.post("/{case_id}/reject", summary="Close a claimed case without a contour, with a reason")
def reject(case_id: CaseId, body: RejectIn, reader: RadiologistPrincipal, db: SessionDep) -> dict[str, str]:
    case = labeling.reject_case(session=db, case_id=case_id, reader=reader.name, reason=body.reason)
    return {"status": case.status}


@router.post(
    "/{case_id}/contour", summary="Submit a contour: DICOM SEG (application/dicom) or NIfTI (application/gzip)"
)
async def submit(case_id: CaseId, request: Request, reader: RadiologistPrincipal, db: SessionDep,
                 settings: SettingsDep, store: StoreDep) -> dict[str, str]:  # fmt: skip
    limit = min(MAX_CONTOUR_BYTES, settings.max_body_bytes)
    check_declared_length(request, limit)
    upload = await _receive(request, store, limit)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        case = await run_in_threadpool(
            lambda: labeling.submit_contour(session=db, settings=settings, case_id=case_id, reader=reader.name,
                                            upload=upload, content_type=content_type)
        )  # fmt: skip
    finally:
        upload.unlink(missing_ok=True)
    return {"status": case.status}


async def _receive(request: Request, store: InstanceStore, limit: int) -> pathlib.Path:
    """The body streamed to a temporary file with a running count (a chunked body has no Content-Length)."""
    writer = store.new_temp(limit)
    try:
        async for chunk in request.stream():
            writer.write(chunk)
    except OverflowError:
        writer.abort()
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"contour exceeds the limit of {limit} bytes")
    except BaseException:
        writer.abort()
        raise
    return writer.finish(False).path

"""DICOMweb STOW-RS: POST /dicomweb/studies[/{study}] with multipart/related application/dicom."""

from __future__ import annotations

import re

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import SettingsDep, StoreDep, StowPrincipal
from app.core.config import Settings
from app.core.proxy import request_base_url
from app.dicom.parse import ParseLimits
from app.services import metrics
from app.services.body import BadCompressedBody, BodyTooLarge, Decoder, UnsupportedEncoding
from app.services.contour_stow import store_parts
from app.services.ingest import StorageUnavailable
from app.services.multipart import Limits, MultipartError, parse_content_type, read_parts
from app.services.storage import ReceivedFile, TempWriter
from app.services.stow import part_refused, stow_body, stow_status

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
DICOM_JSON = "application/dicom+json"


def base_url(request: Request, settings: Settings) -> str:
    """GATEKEEPER_PUBLIC_BASE_URL, else what a trusted proxy forwarded, else the address the connection reached
    (never an untrusted client's Host header: app/core/proxy.py)."""
    return request_base_url(request, settings.public_base_url)


def check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body exceeds the limit of {limit} bytes")


def body_decoder(request: Request, max_bytes: int) -> Decoder:
    """The request's Content-Encoding (gzip, deflate or identity), inflated to at most ``max_bytes``; 415 else."""
    try:
        return Decoder(request.headers.get("content-encoding", "identity"), max_bytes)
    except UnsupportedEncoding as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc))


def _boundary(request: Request) -> str:
    media, params = parse_content_type(request.headers.get("content-type", ""))
    if media != "multipart/related":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "expected multipart/related")
    part_type = params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f'type="{part_type[:40]}" not supported; use application/dicom'
        )
    if "boundary" not in params:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "multipart/related without a boundary parameter")
    return params["boundary"]


async def _store(request: Request, settings: Settings, store, principal, study: str | None) -> JSONResponse:  # type: ignore[no-untyped-def]
    check_declared_length(request, settings.max_body_bytes)
    boundary = _boundary(request)
    limits = Limits(
        settings.max_body_bytes, settings.max_instance_bytes, settings.max_part_header_bytes, settings.max_parts
    )

    def finish(writer: TempWriter) -> ReceivedFile:
        return writer.finish(False)  # fsynced later, in parallel, and only if the instance is new

    def accept(content_type: str) -> bool:
        return content_type == "" or parse_content_type(content_type)[0] == "application/dicom"

    decoder = body_decoder(request, settings.max_body_bytes)  # the inflated body has the body's limit
    # The owner keeps the orphan sweep off this request's files until its commit is over, however slowly
    # the body arrives.
    with store.owner() as owner:
        try:
            parts = await read_parts(request.stream(), boundary, owner.new_temp, finish, limits, accept, decoder)
        except (BodyTooLarge, OverflowError) as exc:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc))
        except (MultipartError, BadCompressedBody) as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc))
        if not parts:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "multipart body has no parts")
        files = [p.received for p in parts if p.received is not None]
        parse_limits = ParseLimits(settings.max_pixel_bytes, settings.max_sequence_depth)
        try:
            stored = await run_in_threadpool(
                lambda: store_parts(
                    settings=settings,
                    store=store,
                    files=files,
                    role=principal.role,
                    actor=principal.name,
                    expected_study=study,
                    limits=parse_limits,
                )
            )
        except StorageUnavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"})
    metrics.observe_ingest("stow", stored, [f.size for f in files])
    if len(files) < len(parts):
        metrics.refused("stow", "media_type", len(parts) - len(files))
    it = iter(stored)
    outcomes = [next(it) if p.received is not None else part_refused(p.content_type) for p in parts]
    return JSONResponse(stow_body(outcomes, base_url(request, settings)), stow_status(outcomes), media_type=DICOM_JSON)


STOW_DESCRIPTION = (
    "A PACS stores CT images. A radiologist stores DICOM SEG contours: each is taken as the contour of the case "
    "of the series it references, which the radiologist must hold (claimed, lease live), validated against "
    "that series' grid and frame of reference like an upload to /queue/{case_id}/contour; a refusal is a "
    "FailureReason with an ErrorComment (0000,0902) that says why."
)


@router.post("/studies", summary="STOW-RS: store instances of any study", description=STOW_DESCRIPTION)
async def store_instances(
    request: Request, principal: StowPrincipal, settings: SettingsDep, store: StoreDep
) -> JSONResponse:
    return await _store(request, settings, store, principal, None)


@router.post("/studies/{study_uid}", summary="STOW-RS: store instances of one study", description=STOW_DESCRIPTION)
async def store_study_instances(
    study_uid: str, request: Request, principal: StowPrincipal, settings: SettingsDep, store: StoreDep
) -> JSONResponse:
    if not re.match(UID_PATTERN, study_uid) or len(study_uid) > 64:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "StudyInstanceUID in the URL is not a valid UID")
    return await _store(request, settings, store, principal, study_uid)

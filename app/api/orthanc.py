"""Orthanc peer push: POST /instances (one DICOM file, optionally gzip) and GET /system."""

from __future__ import annotations

import zlib

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api.deps import PacsPrincipal, SettingsDep, StoreDep
from app.api.stow import check_declared_length
from app.dicom.parse import ParseLimits
from app.services import metrics
from app.services.ingest import StorageUnavailable, ingest_files

router = APIRouter(tags=["orthanc-peer"])


async def _receive(request: Request, writer, max_bytes: int) -> None:  # type: ignore[no-untyped-def]
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", "gzip"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"Content-Encoding {encoding[:20]} not supported")
    # Bounded inflation: a deflate bomb stops at the instance size limit.
    inflater = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    async for chunk in request.stream():
        if inflater is None:
            writer.write(chunk)
            continue
        data = chunk
        while data:
            out = inflater.decompress(data, 1 << 20)
            writer.write(out)
            data = inflater.unconsumed_tail
    if inflater is not None and not inflater.eof:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "gzip body is truncated")


@router.post("/instances", summary="Orthanc peer push: store one DICOM instance")
async def push_instance(
    request: Request, principal: PacsPrincipal, settings: SettingsDep, store: StoreDep
) -> JSONResponse:
    check_declared_length(request, settings.max_instance_bytes)
    with store.owner() as owner:  # the orphan sweep keeps off the file until its commit is over
        writer = owner.new_temp(settings.max_instance_bytes)
        try:
            await _receive(request, writer, settings.max_instance_bytes)
        except OverflowError:
            writer.abort()
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "instance exceeds the size limit")
        except zlib.error:
            writer.abort()
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "body is not valid gzip")
        except BaseException:
            writer.abort()
            raise
        received = writer.finish(False)  # ingest fsyncs it if it is new
        limits = ParseLimits(settings.max_pixel_bytes, settings.max_sequence_depth)
        try:
            [outcome] = await run_in_threadpool(
                lambda: ingest_files(
                    store=store, files=[received], expected_study=None, actor=principal.name, limits=limits
                )
            )
        except StorageUnavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"})
    metrics.observe_ingest("peer", [outcome], [received.size])
    if not outcome.ok:
        assert outcome.reason is not None
        code = status.HTTP_409_CONFLICT if outcome.reason.is_conflict else status.HTTP_400_BAD_REQUEST
        return JSONResponse(
            {"HttpStatus": code, "Message": outcome.message, "FailureReason": int(outcome.reason)}, status_code=code
        )
    path = f"/dicomweb/studies/{outcome.study_uid}/series/{outcome.series_uid}/instances/{outcome.sop_instance_uid}"
    return JSONResponse(
        {
            "ID": outcome.sop_instance_uid,
            "ParentSeries": outcome.series_uid,
            "ParentStudy": outcome.study_uid,
            "Path": path,
            "Status": "AlreadyStored" if outcome.duplicate else "Success",
        }
    )


@router.get("/system", summary="Orthanc-compatible system information, for peers")
def system(_: PacsPrincipal) -> dict[str, object]:
    return {
        "Name": "gatekeeper",
        "Version": __version__,
        "ApiVersion": 18,
        "DicomAet": "GATEKEEPER",
        "PluginsEnabled": False,
        "IsHttpServerSecure": False,
    }

"""Orthanc peer push: POST /instances (one DICOM file, optionally gzip) and GET /system."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api.deps import PacsPrincipal, SettingsDep, StoreDep
from app.api.stow import body_decoder, check_declared_length
from app.dicom.parse import ParseLimits
from app.services import metrics
from app.services.body import BadCompressedBody, BodyTooLarge, pump
from app.services.ingest import StorageUnavailable, ingest_files

router = APIRouter(tags=["orthanc-peer"])


@router.post("/instances", summary="Orthanc peer push: store one DICOM instance")
async def push_instance(
    request: Request, principal: PacsPrincipal, settings: SettingsDep, store: StoreDep
) -> JSONResponse:
    check_declared_length(request, settings.max_instance_bytes)
    # Bounded inflation (a gzip bomb stops at the instance size limit), in a worker thread with the hashing
    # and the file writes: a large or compressed push never stalls the event loop.
    decoder = body_decoder(request, settings.max_instance_bytes)
    with store.owner() as owner:  # the orphan sweep keeps off the file until its commit is over
        writer = owner.new_temp(settings.max_instance_bytes)
        try:
            await pump(request.stream(), decoder, writer.write)
        except (BodyTooLarge, OverflowError):
            writer.abort()
            inflated = " once inflated" if decoder.inflated else ""
            detail = f"instance exceeds the size limit of {settings.max_instance_bytes} bytes{inflated}"
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail)
        except BadCompressedBody as exc:
            writer.abort()
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc))
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

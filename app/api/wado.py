"""WADO-RS: retrieve stored instances (multipart/related) and their metadata (DICOM JSON)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import ReaderPrincipal, SessionDep, SettingsDep, StoreDep
from app.api.qido import UidPath
from app.api.stow import DICOM_JSON, base_url
from app.db import reads
from app.services.dicomweb import multipart_boundary, stream_multipart
from app.services.frames import metadata_json

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept", "*/*").lower()
    if not any(t in accept for t in ("multipart/related", "*/*", "application/dicom")):
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE, 'WADO-RS returns multipart/related; type="application/dicom"'
        )


def _rows(db, study_uid: str, series_uid: str | None, sop_uid: str | None):  # type: ignore[no-untyped-def]
    rows = reads.find_instances(db, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study, series or instance")
    return rows


def _retrieve(request: Request, db, store, study_uid: str, series_uid: str | None, sop_uid: str | None):  # type: ignore[no-untyped-def]
    _check_accept(request)
    paths = [store.absolute(i.storage_path) for i, _ in _rows(db, study_uid, series_uid, sop_uid)]
    boundary = multipart_boundary()
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return StreamingResponse(stream_multipart(paths, boundary), media_type=media)


def _metadata(request: Request, db, store, settings, study_uid: str, series_uid: str | None, sop_uid: str | None):  # type: ignore[no-untyped-def]
    base = base_url(request, settings)
    items = []
    for inst, series in _rows(db, study_uid, series_uid, sop_uid):
        bulk = f"{base}/dicomweb/studies/{study_uid}/series/{series.series_uid}/instances/{inst.sop_instance_uid}"
        items.append(metadata_json(store.absolute(inst.storage_path), bulk))
    return JSONResponse(items, media_type=DICOM_JSON)


@router.get("/studies/{study_uid}", summary="WADO-RS: retrieve a study")
def retrieve_study(study_uid: UidPath, request: Request, _: ReaderPrincipal, db: SessionDep, store: StoreDep):  # type: ignore[no-untyped-def]
    return _retrieve(request, db, store, study_uid, None, None)


@router.get("/studies/{study_uid}/series/{series_uid}", summary="WADO-RS: retrieve a series")
def retrieve_series(study_uid: UidPath, series_uid: UidPath, request: Request, _: ReaderPrincipal,
                    db: SessionDep, store: StoreDep):  # type: ignore[no-untyped-def]  # fmt: skip
    return _retrieve(request, db, store, study_uid, series_uid, None)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}", summary="WADO-RS: retrieve an instance")
def retrieve_instance(study_uid: UidPath, series_uid: UidPath, sop_uid: UidPath, request: Request,
                      _: ReaderPrincipal, db: SessionDep, store: StoreDep):  # type: ignore[no-untyped-def]  # fmt: skip
    return _retrieve(request, db, store, study_uid, series_uid, sop_uid)


@router.get("/studies/{study_uid}/metadata", summary="WADO-RS: metadata of a study")
def study_metadata(study_uid: UidPath, request: Request, _: ReaderPrincipal, db: SessionDep,
                   store: StoreDep, settings: SettingsDep) -> JSONResponse:  # fmt: skip
    return _metadata(request, db, store, settings, study_uid, None, None)


@router.get("/studies/{study_uid}/series/{series_uid}/metadata", summary="WADO-RS: metadata of a series")
def series_metadata(study_uid: UidPath, series_uid: UidPath, request: Request, _: ReaderPrincipal,
                    db: SessionDep, store: StoreDep, settings: SettingsDep) -> JSONResponse:  # fmt: skip
    return _metadata(request, db, store, settings, study_uid, series_uid, None)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
            summary="WADO-RS: metadata of an instance")  # fmt: skip
def instance_metadata(
    study_uid: UidPath, series_uid: UidPath, sop_uid: UidPath, request: Request,
    _: ReaderPrincipal, db: SessionDep, store: StoreDep, settings: SettingsDep,
) -> JSONResponse:  # fmt: skip
    return _metadata(request, db, store, settings, study_uid, series_uid, sop_uid)

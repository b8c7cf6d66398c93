"""WADO-RS for viewers: frames, bulk data and rendered frames of one instance (PS3.18 10.4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import ReaderPrincipal, SessionDep, StoreDep
from app.api.qido import UidPath
from app.db import reads
from app.services import frames
from app.services.dicomweb import multipart_boundary, stream_parts

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
INSTANCE = "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
FrameList = Annotated[str, Path(max_length=8000, description="1-based frame numbers, comma-separated")]
TagPath = Annotated[str, Path(max_length=600, description="TTTTTTTT[/item/TTTTTTTT]..., as in a BulkDataURI")]
Window = Annotated[str | None, Query(max_length=80, description="center,width[,linear]")]


def _path(db, store, study_uid: str, series_uid: str, sop_uid: str):  # type: ignore[no-untyped-def]
    rows = reads.find_instances(db, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study, series or instance")
    return store.absolute(rows[0][0].storage_path)


def _multipart(parts: list[frames.Part]) -> StreamingResponse:
    boundary = multipart_boundary()
    first = parts[0].media_type.split(";")[0] if parts else frames.OCTET
    media = f'multipart/related; type="{first}"; boundary={boundary}'
    return StreamingResponse(stream_parts([(p.data, p.media_type) for p in parts], boundary), media_type=media)


def _check_multipart(request: Request) -> str:
    accept = request.headers.get("accept", "*/*")
    if not any(t in accept.lower() for t in ("multipart/related", "*/*")):
        raise HTTPException(status.HTTP_406_NOT_ACCEPTABLE,
                            'frames and bulk data are multipart/related; type="application/octet-stream"')  # fmt: skip
    return accept


@router.get(INSTANCE + "/frames/{frame_list}", summary="WADO-RS: frames of an instance (multipart)")
async def retrieve_frames(
    study_uid: UidPath,
    series_uid: UidPath,
    sop_uid: UidPath,
    frame_list: FrameList,
    request: Request,
    _: ReaderPrincipal,
    db: SessionDep,
    store: StoreDep,
) -> Response:
    accept = _check_multipart(request)
    numbers = frames.parse_frame_list(frame_list)
    path = _path(db, store, study_uid, series_uid, sop_uid)
    return _multipart(await run_in_threadpool(frames.read_frames, path, numbers, accept))


@router.get(INSTANCE + "/bulkdata/{tag_path:path}", summary="WADO-RS: bulk data of an instance (multipart)")
async def retrieve_bulkdata(
    study_uid: UidPath,
    series_uid: UidPath,
    sop_uid: UidPath,
    tag_path: TagPath,
    request: Request,
    _: ReaderPrincipal,
    db: SessionDep,
    store: StoreDep,
) -> Response:
    _check_multipart(request)
    path = _path(db, store, study_uid, series_uid, sop_uid)
    return _multipart(await run_in_threadpool(frames.read_bulkdata, path, tag_path))


async def _rendered(request: Request, db, store, uids: tuple[str, str, str], number: int, window: str | None):  # type: ignore[no-untyped-def]
    media = frames.rendered_type(request.headers.get("accept", "*/*"))
    parsed = frames.parse_window(window)
    path = _path(db, store, *uids)
    body = await run_in_threadpool(frames.render_frame, path, number, parsed, media)
    return Response(body, media_type=media)


@router.get(INSTANCE + "/rendered", summary="WADO-RS: an instance's first frame rendered (PNG or JPEG)")
async def rendered_instance(
    study_uid: UidPath,
    series_uid: UidPath,
    sop_uid: UidPath,
    request: Request,
    _: ReaderPrincipal,
    db: SessionDep,
    store: StoreDep,
    window: Window = None,
) -> Response:
    return await _rendered(request, db, store, (study_uid, series_uid, sop_uid), 1, window)


@router.get(INSTANCE + "/frames/{frame_number}/rendered", summary="WADO-RS: one frame rendered (PNG or JPEG)")
async def rendered_frame(
    study_uid: UidPath,
    series_uid: UidPath,
    sop_uid: UidPath,
    request: Request,
    _: ReaderPrincipal,
    db: SessionDep,
    store: StoreDep,
    frame_number: Annotated[int, Path(ge=1, le=1_000_000)],
    window: Window = None,
) -> Response:
    return await _rendered(request, db, store, (study_uid, series_uid, sop_uid), frame_number, window)

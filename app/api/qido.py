"""QIDO-RS: search studies, series and instances."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse, Response

from app.api.deps import MAX_OFFSET, NO_NUL, ReaderPrincipal, SessionDep, SettingsDep
from app.api.stow import DICOM_JSON, UID_PATTERN, base_url
from app.db import reads
from app.services.dicomweb import BadQuery, instance_json, parse_date_range, series_json, study_json

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
UidQuery = Annotated[str | None, Query(pattern=UID_PATTERN, max_length=64)]
UidPath = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def _reply(items: list[dict[str, Any]]) -> Response:
    # PS3.18: an empty match is 204 No Content, not an empty array.
    if not items:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return JSONResponse(items, media_type=DICOM_JSON)


@router.get("/studies", summary="QIDO-RS: search for studies")
def search_studies(
    request: Request, _: ReaderPrincipal, db: SessionDep, settings: SettingsDep,
    StudyInstanceUID: UidQuery = None, PatientID: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    AccessionNumber: Annotated[str | None, Query(max_length=16, pattern=NO_NUL)] = None,
    StudyDate: Annotated[str | None, Query(max_length=17)] = None,
    ModalitiesInStudy: Annotated[str | None, Query(max_length=16, pattern=NO_NUL)] = None,
    limit: Limit = 100, offset: Offset = 0,
) -> Response:  # fmt: skip
    try:
        date_from, date_to = parse_date_range(StudyDate)
    except BadQuery as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc))
    f = reads.StudyFilter(
        StudyInstanceUID, PatientID, AccessionNumber, date_from, date_to, ModalitiesInStudy, limit, offset
    )
    base = base_url(request, settings)
    return _reply([study_json(s, ns, ni, mods, base) for s, ns, ni, mods in reads.find_studies(db, f)])


@router.get("/series", summary="QIDO-RS: search for series of any study")
def search_all_series(
    request: Request, _: ReaderPrincipal, db: SessionDep, settings: SettingsDep,
    SeriesInstanceUID: UidQuery = None, Modality: Annotated[str | None, Query(max_length=16, pattern=NO_NUL)] = None,
    limit: Limit = 100, offset: Offset = 0,
) -> Response:  # fmt: skip
    rows = reads.find_series(
        db, study_uid=None, series_uid=SeriesInstanceUID, modality=Modality, limit=limit, offset=offset
    )
    base = base_url(request, settings)
    return _reply([series_json(s, st, base) for s, st in rows])


@router.get("/studies/{study_uid}/series", summary="QIDO-RS: search for series of a study")
def search_series(
    study_uid: UidPath, request: Request, _: ReaderPrincipal, db: SessionDep, settings: SettingsDep,
    SeriesInstanceUID: UidQuery = None, Modality: Annotated[str | None, Query(max_length=16, pattern=NO_NUL)] = None,
    limit: Limit = 100, offset: Offset = 0,
) -> Response:  # fmt: skip
    rows = reads.find_series(db, study_uid=study_uid, series_uid=SeriesInstanceUID, modality=Modality,
                             limit=limit, offset=offset)  # fmt: skip
    base = base_url(request, settings)
    return _reply([series_json(s, st, base) for s, st in rows])


@router.get("/studies/{study_uid}/series/{series_uid}/instances", summary="QIDO-RS: search for instances")
def search_instances(
    study_uid: UidPath, series_uid: UidPath, request: Request, _: ReaderPrincipal, db: SessionDep,
    settings: SettingsDep, SOPInstanceUID: UidQuery = None,
) -> Response:  # fmt: skip
    rows = reads.find_instances(db, study_uid=study_uid, series_uid=series_uid, sop_uid=SOPInstanceUID)
    base = base_url(request, settings)
    return _reply([instance_json(i, s, study_uid, base) for i, s in rows])

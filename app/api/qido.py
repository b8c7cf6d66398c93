"""QIDO-RS: search studies, series and instances (PS3.18 10.6), every resource of the standard."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import JSONResponse, Response

from app.api.deps import ReaderPrincipal, SessionDep, SettingsDep
from app.api.stow import DICOM_JSON, UID_PATTERN, base_url
from app.services import qido
from app.services.qido_query import KEYS, Resource

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
UidPath = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]
MATCHING = (
    "Query parameters: {attributeID}={value} for an attribute of the levels this resource matches (keyword or "
    "tag; " + ", ".join(KEYS) + "): UIDs singly or as a list (, or \\), * and ? wildcards on strings "
    "(case-sensitive; person names ignore ASCII case), date and time ranges A-B with open ends; "
    "`includefield` (keyword, tag or `all`), `limit` (1-10000, default 10000), `offset`, `fuzzymatching=false`. "
    "Any other attribute is refused with 400. No match is 204."
)


def _search(request: Request, db: SessionDep, settings: SettingsDep, resource: Resource,
            study_uid: str | None = None, series_uid: str | None = None) -> Response:  # fmt: skip
    # a BadQuery is a DomainError: app.main answers it 400 with its message
    result = qido.search(session=db, resource=resource, params=list(request.query_params.multi_items()),
                         base=base_url(request, settings), study_uid=study_uid, series_uid=series_uid)  # fmt: skip
    headers = {"Warning": ", ".join(f'299 gatekeeper "{w}"' for w in result.warnings)} if result.warnings else None
    if not result.items:  # PS3.18: an empty match is 204 No Content, not an empty array
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)
    return JSONResponse(result.items, media_type=DICOM_JSON, headers=headers)


@router.get("/studies", summary="QIDO-RS: search for studies", description=MATCHING)
def search_studies(request: Request, _: ReaderPrincipal, db: SessionDep, settings: SettingsDep) -> Response:
    return _search(request, db, settings, Resource.STUDIES)


@router.get("/series", summary="QIDO-RS: search for series of any study", description=MATCHING)
def search_all_series(request: Request, _: ReaderPrincipal, db: SessionDep, settings: SettingsDep) -> Response:
    return _search(request, db, settings, Resource.ALL_SERIES)


@router.get("/instances", summary="QIDO-RS: search for instances of any study", description=MATCHING)
def search_all_instances(request: Request, _: ReaderPrincipal, db: SessionDep, settings: SettingsDep) -> Response:
    return _search(request, db, settings, Resource.ALL_INSTANCES)


@router.get("/studies/{study_uid}/series", summary="QIDO-RS: search for series of a study", description=MATCHING)
def search_series(
    study_uid: UidPath, request: Request, _: ReaderPrincipal, db: SessionDep, settings: SettingsDep
) -> Response:
    return _search(request, db, settings, Resource.STUDY_SERIES, study_uid)


@router.get("/studies/{study_uid}/instances", summary="QIDO-RS: search for instances of a study",
            description=MATCHING)  # fmt: skip
def search_study_instances(
    study_uid: UidPath, request: Request, _: ReaderPrincipal, db: SessionDep, settings: SettingsDep
) -> Response:
    return _search(request, db, settings, Resource.STUDY_INSTANCES, study_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/instances", summary="QIDO-RS: search for instances of a series",
            description=MATCHING)  # fmt: skip
def search_instances(
    study_uid: UidPath, series_uid: UidPath, request: Request, _: ReaderPrincipal, db: SessionDep,
    settings: SettingsDep,
) -> Response:  # fmt: skip
    return _search(request, db, settings, Resource.SERIES_INSTANCES, study_uid, series_uid)

"""Series state: read it, or complete a series at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import PacsPrincipal, ReaderPrincipal, SessionDep
from app.api.qido import UidPath
from app.db.tables import Series
from app.services import series as service

router = APIRouter(prefix="/series", tags=["series"])


class SeriesOut(BaseModel):
    id: int
    series_uid: str
    status: str
    revision: int
    attempts: int
    instance_count: int
    last_instance_at: datetime
    completed_at: datetime | None
    geometry: dict[str, Any] | None
    last_error: str | None


def _out(series: Series) -> SeriesOut:
    return SeriesOut.model_validate(series, from_attributes=True)


@router.get("/{series_uid}", summary="State of one series")
def read_series(series_uid: UidPath, _: ReaderPrincipal, db: SessionDep) -> SeriesOut:
    return _out(service.get_series(session=db, series_uid=series_uid))


@router.post("/{series_uid}/complete", summary="Complete a series now (instead of waiting for the stable age)")
def complete_series(series_uid: UidPath, principal: PacsPrincipal, db: SessionDep) -> SeriesOut:
    return _out(service.complete_now(session=db, series_uid=series_uid, actor=principal.name))

"""Model versions for ML engineers: list, promote, roll back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict

from app.api.deps import MAX_ROW_ID, EngineerPrincipal, SessionDep
from app.db import model_versions
from app.db.tables import ModelVersion
from app.services import registry

router = APIRouter(prefix="/models", tags=["models"])
Kind = Literal["scorer", "segmenter"]


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    version: int
    sha256: str
    status: str
    metrics: dict[str, Any]
    card: dict[str, Any]
    training_job_id: int | None
    created_at: datetime
    promoted_at: datetime | None


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Kind


def _out(row: ModelVersion) -> ModelOut:
    return ModelOut.model_validate(row)


@router.get("", summary="Model versions, by kind and version")
def list_models(_: EngineerPrincipal, db: SessionDep, kind: Annotated[Kind | None, Query()] = None) -> list[ModelOut]:
    return [_out(m) for m in model_versions.list_versions(db, kind)]


@router.post("/{model_id}/promote", summary="Promote a version: new series use it; series in flight keep theirs")
def promote(
    model_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], engineer: EngineerPrincipal, db: SessionDep
) -> ModelOut:
    return _out(registry.promote(session=db, model_id=model_id, actor=engineer.name))


@router.post("/rollback", summary="Promote again the version promoted before the current one")
def rollback(body: RollbackIn, engineer: EngineerPrincipal, db: SessionDep) -> ModelOut:
    return _out(registry.rollback(session=db, kind=body.kind, actor=engineer.name))

"""Training jobs for ML engineers: start one, follow it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import MAX_ROW_ID, EngineerPrincipal, SessionDep, SettingsDep
from app.db.tables import TrainingJob
from app.services import training

router = APIRouter(prefix="/training-jobs", tags=["training"])


class TrainingParams(BaseModel):
    """What a job may change; anything else is refused (422)."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(default=2000, ge=1, le=1_000_000)
    encoder_steps: int = Field(default=1000, ge=0, le=1_000_000)  # scorer only
    base_width: int = Field(default=16, ge=2, le=128)
    batch_size: int = Field(default=16, ge=1, le=256)
    include_base_data: bool = True  # the cases of the data directory (MANIFEST split) besides the labelled ones
    seed: int = 0


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["scorer", "segmenter"]
    auto_promote: bool = False  # promote only if not worse than the current model on the frozen test split
    params: TrainingParams = Field(default_factory=TrainingParams)


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    status: str
    auto_promote: bool
    params: dict
    model_version_id: int | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Refusal(BaseModel):
    detail: str | list[dict[str, Any]]  # a message, or pydantic's list of field errors


REFUSALS: dict[int | str, dict[str, Any]] = {
    422: {"model": Refusal, "description": "invalid parameters, or a job over GATEKEEPER_TRAINING_MAX_STEPS"},
    429: {"model": Refusal, "description": "GATEKEEPER_TRAINING_MAX_ACTIVE_JOBS jobs are already queued or running"},
}


@router.post("", status_code=status.HTTP_202_ACCEPTED, summary="Start a training job on the training queue",
             responses=REFUSALS)  # fmt: skip
def start_job(body: JobIn, engineer: EngineerPrincipal, db: SessionDep, settings: SettingsDep) -> JobOut:
    limits = training.TrainingLimits(max_steps=settings.training_max_steps,
                                     max_active_jobs=settings.training_max_active_jobs)  # fmt: skip
    job = training.request_job(session=db, kind=body.kind, params=body.params.model_dump(),
                               auto_promote=body.auto_promote, actor=engineer.name, limits=limits)  # fmt: skip
    db.flush()
    return JobOut.model_validate(job)


@router.get("/{job_id}", summary="A training job's state and the model version it produced")
def read_job(job_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], _: EngineerPrincipal, db: SessionDep) -> JobOut:
    job: TrainingJob = training.get_job(session=db, job_id=job_id)
    return JobOut.model_validate(job)

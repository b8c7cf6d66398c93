"""Training jobs for ML engineers: start one, follow it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, status
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
    progress: dict[str, Any] | None = Field(default=None, description="phase, step, total, fraction, it_per_s "
                                            "(from the run's metrics; absent on the reply to a new job)")  # fmt: skip


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


JobId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]


def _with_progress(job: TrainingJob, settings: SettingsDep) -> JobOut:
    out = JobOut.model_validate(job)
    out.progress = training.job_progress(settings, job)
    return out


@router.get("", summary="Training jobs, newest first, with their progress")
def list_jobs(_: EngineerPrincipal, db: SessionDep, settings: SettingsDep,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobOut]:  # fmt: skip
    return [_with_progress(job, settings) for job in training.list_jobs(session=db, limit=limit)]


@router.get("/{job_id}", summary="A training job's state, progress and the model version it produced")
def read_job(job_id: JobId, _: EngineerPrincipal, db: SessionDep, settings: SettingsDep) -> JobOut:
    return _with_progress(training.get_job(session=db, job_id=job_id), settings)


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job (a running one stops at its next step)",
             responses={409: {"model": Refusal, "description": "the job already finished"}})  # fmt: skip
def cancel_job(job_id: JobId, engineer: EngineerPrincipal, db: SessionDep, settings: SettingsDep) -> JobOut:
    return _with_progress(training.cancel_job(session=db, job_id=job_id, actor=engineer.name), settings)

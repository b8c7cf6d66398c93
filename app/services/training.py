"""Training jobs: requested by an ML engineer, published through the outbox, run on the training queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from app.core.errors import Invalid, NotFound, TooMany
from app.db.rows import affected
from app.db.states import TrainingJobStatus
from app.db.tables import OutboxEvent, TrainingJob
from app.services import audit

TRAIN_TOPIC = "train"
QUOTA_LOCK_KEY = 0x67_6B_74_72  # "gktr": the advisory lock that serialises admission of training jobs


class JobNotFound(NotFound):
    pass


class JobTooLarge(Invalid):
    pass


class TooManyJobs(TooMany):
    pass


@dataclass(frozen=True)
class TrainingLimits:
    max_steps: int  # steps of one job (a scorer's GAN steps and encoder steps together)
    max_active_jobs: int  # jobs queued or running at once


ACTIVE = (TrainingJobStatus.QUEUED, TrainingJobStatus.RUNNING)


def job_steps(kind: str, params: dict[str, Any]) -> int:
    """A job's size in optimiser steps: a scorer trains its GAN, then its encoder; a segmenter has no encoder."""
    steps = int(params.get("steps", 0))
    return steps + int(params.get("encoder_steps", 0)) if kind == "scorer" else steps


def request_job(*, session: Session, kind: str, params: dict[str, Any], auto_promote: bool, actor: str,
                limits: TrainingLimits) -> TrainingJob:  # fmt: skip
    """A queued job and its outbox row, in one transaction; refused when too large or when the queue is full."""
    size = job_steps(kind, params)
    if size > limits.max_steps:
        what = "steps + encoder_steps" if kind == "scorer" else "steps"
        raise JobTooLarge(f"{what} = {size} is over the limit of {limits.max_steps} steps per training job "
                          "(GATEKEEPER_TRAINING_MAX_STEPS)")  # fmt: skip
    job = TrainingJob(
        kind=kind, params=params, auto_promote=auto_promote, requested_by=actor, status=TrainingJobStatus.QUEUED
    )
    session.add(job)
    session.flush()
    # Counted after the insert, under a lock, so two requests at once cannot both take the last place: PostgreSQL
    # serialises on an advisory lock held to the commit; SQLite already holds its single writer's lock here.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": QUOTA_LOCK_KEY})
    active = session.scalar(select(func.count()).select_from(TrainingJob).where(TrainingJob.status.in_(ACTIVE))) or 0
    if active > limits.max_active_jobs:
        raise TooManyJobs(f"{active - 1} training jobs are already queued or running, the limit is "
                          f"{limits.max_active_jobs} (GATEKEEPER_TRAINING_MAX_ACTIVE_JOBS); try again when one "
                          "has finished")  # fmt: skip
    session.add(OutboxEvent(topic=TRAIN_TOPIC, training_job_id=job.id, revision=0, publish_count=0))
    audit.record(session, actor=actor, action="training.requested", entity_type="training_job", entity_id=job.id,
                 kind=kind, auto_promote=auto_promote)  # fmt: skip
    return job


def get_job(*, session: Session, job_id: int) -> TrainingJob:
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise JobNotFound(f"no training job {job_id}")
    return job


def claim_job(session: Session, *, job_id: int, task_id: str) -> bool:
    """queued -> running; a redelivered message (same task id) may take its job over."""
    stmt = (
        update(TrainingJob)
        .where(
            TrainingJob.id == job_id,
            or_(
                TrainingJob.status == TrainingJobStatus.QUEUED,
                and_(TrainingJob.status == TrainingJobStatus.RUNNING, TrainingJob.claimed_by == task_id),
            ),
        )  # fmt: skip
        .values(status=TrainingJobStatus.RUNNING, claimed_by=task_id, started_at=datetime.now(UTC))
    )
    return affected(session, stmt) == 1


def finish_job(session: Session, *, job_id: int, task_id: str, status: str, **values: Any) -> bool:
    stmt = (
        update(TrainingJob)
        .where(
            TrainingJob.id == job_id, TrainingJob.status == TrainingJobStatus.RUNNING, TrainingJob.claimed_by == task_id
        )
        .values(status=status, finished_at=datetime.now(UTC), **values)
    )
    return affected(session, stmt) == 1

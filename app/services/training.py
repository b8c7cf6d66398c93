"""Training jobs: requested by an ML engineer, published through the outbox, run on the training queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Conflict, Invalid, NotFound, TooMany
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


class JobFinished(Conflict):
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


def list_jobs(*, session: Session, limit: int = 100) -> list[TrainingJob]:
    """The latest jobs, newest first."""
    return list(session.scalars(select(TrainingJob).order_by(TrainingJob.id.desc()).limit(limit)))


def cancel_job(*, session: Session, job_id: int, actor: str) -> TrainingJob:
    """queued or running -> cancelled. A queued job is then never claimed (``claim_job`` takes queued ones
    only); a running one is stopped by its worker at the next check (``is_cancelled``) and registers nothing."""
    stmt = (
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status.in_(ACTIVE))
        .values(status=TrainingJobStatus.CANCELLED, finished_at=datetime.now(UTC))
    )
    if affected(session, stmt) != 1:
        job = get_job(session=session, job_id=job_id)
        raise JobFinished(f"training job {job_id} is already {job.status}: only a queued or running job can be "
                          "cancelled")  # fmt: skip
    audit.record(session, actor=actor, action="training.cancelled", entity_type="training_job", entity_id=job_id)
    job = get_job(session=session, job_id=job_id)
    session.refresh(job)
    return job


def is_cancelled(session: Session, *, job_id: int) -> bool:
    return session.scalar(select(TrainingJob.status).where(TrainingJob.id == job_id)) == TrainingJobStatus.CANCELLED


def job_dir(settings: Settings, job_id: int) -> Path:
    """Where the training worker keeps a job's data links, run folder and checkpoints."""
    return settings.storage_dir.resolve().parent / "training" / f"job-{job_id}"


PROGRESS_TAIL_BYTES = 16 * 1024


def job_progress(settings: Settings, job: TrainingJob) -> dict[str, Any]:
    """How far a job got, from the last lines of its run's metrics.jsonl: phase, step, total, rate (it/s)."""
    totals = {"train": int(job.params.get("steps", 0)), "gan": int(job.params.get("steps", 0)),
              "encoder": int(job.params.get("encoder_steps", 0))}  # fmt: skip
    path = job_dir(settings, job.id) / "run" / "metrics.jsonl"
    last: dict[str, Any] = {}
    try:
        with path.open("rb") as fp:
            fp.seek(max(0, path.stat().st_size - PROGRESS_TAIL_BYTES))
            lines = fp.read().decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record and (record.get("phase") or record.get("kind")) in totals:
            last = record
            break
    phase = str(last.get("phase") or last.get("kind") or "")
    step, total = int(last.get("step", 0)), totals.get(phase, totals["train"])
    done = step + (totals["gan"] if job.kind == "scorer" and phase == "encoder" else 0)
    whole = job_steps(job.kind, job.params) or 1
    return {"phase": phase, "step": step, "total": total, "fraction": min(1.0, done / whole),
            "it_per_s": last.get("it_per_s")}  # fmt: skip

"""Training jobs: requested by an ML engineer, published through the outbox, run on the training queue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.db.rows import affected
from app.db.states import TrainingJobStatus
from app.db.tables import OutboxEvent, TrainingJob
from app.services import audit

TRAIN_TOPIC = "train"


class JobNotFound(NotFound):
    pass


def request_job(*, session: Session, kind: str, params: dict[str, Any], auto_promote: bool, actor: str) -> TrainingJob:
    """A queued job and its outbox row, in one transaction."""
    job = TrainingJob(
        kind=kind, params=params, auto_promote=auto_promote, requested_by=actor, status=TrainingJobStatus.QUEUED
    )
    session.add(job)
    session.flush()
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

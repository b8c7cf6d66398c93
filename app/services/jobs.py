"""Publishing jobs by task name; the API never imports worker code."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.core.broker import DELIVER_RESULT_TASK, SCORE_SERIES_TASK, TRAIN_MODEL_TASK, make_celery
from app.core.config import get_settings
from app.db.tables import OutboxEvent


@lru_cache
def celery_client() -> Celery:
    return make_celery(get_settings())


def publish_job(job: OutboxEvent) -> None:
    """Send one outbox row; only ids travel (never pixels or PHI)."""
    attempt = job.publish_count + 1
    if job.training_job_id is not None:
        task_id = f"train-{job.training_job_id}-p{attempt}"
        celery_client().send_task(TRAIN_MODEL_TASK, args=[job.training_job_id], task_id=task_id)
        return
    task_id = f"score-{job.series_id}-r{job.revision}-p{attempt}"
    celery_client().send_task(SCORE_SERIES_TASK, args=[job.series_id, job.revision], task_id=task_id)


def publish_delivery(delivery_id: int, publish_count: int) -> None:
    """Send one due delivery of the results outbox (its id only)."""
    task_id = f"deliver-{delivery_id}-p{publish_count}"
    celery_client().send_task(DELIVER_RESULT_TASK, args=[delivery_id], task_id=task_id)

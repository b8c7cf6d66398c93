"""Publishing jobs by task name; the API never imports worker code."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.core.config import get_settings
from app.core.queue import SCORE_SERIES_TASK, make_celery
from app.db.tables import OutboxEvent


@lru_cache
def celery_client() -> Celery:
    return make_celery(get_settings())


def publish_job(job: OutboxEvent) -> None:
    """Send one outbox row; only ids travel (never pixels or PHI)."""
    task_id = f"score-{job.series_id}-r{job.revision}-p{job.publish_count + 1}"
    celery_client().send_task(SCORE_SERIES_TASK, args=[job.series_id, job.revision], task_id=task_id)

"""Thin task wrappers: ids in, a pipeline function does the work."""

from __future__ import annotations

from app.core.queue import SCORE_SERIES_TASK, TRAIN_MODEL_TASK
from workers.celery_app import celery_app
from workers.pipelines.retrain import train_model_impl
from workers.pipelines.score import score_series_impl


@celery_app.task(name=SCORE_SERIES_TASK, bind=True)
def score_series(self, series_id: int, revision: int) -> str:  # type: ignore[no-untyped-def]
    """Score and route one (series, revision); safe to run twice (fenced by the attempt number)."""
    return score_series_impl(series_id=series_id, revision=revision, task_id=self.request.id or "")


# Training outlives the scoring limits: its own limits, still below the visibility timeout.
@celery_app.task(name=TRAIN_MODEL_TASK, bind=True, time_limit=3300, soft_time_limit=3240)
def train_model(self, job_id: int) -> str:  # type: ignore[no-untyped-def]
    """Run one training job; a job already claimed by another live task is skipped."""
    return train_model_impl(job_id=job_id, task_id=self.request.id or "")

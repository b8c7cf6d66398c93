"""The training task: a job id in, ``retrain.train_model_impl`` does the work."""

from __future__ import annotations

from app.core.broker import TRAIN_MODEL_TASK
from workers.celery_app import celery_app
from workers.training.retrain import train_model_impl


# Training outlives the scoring limits: its own limits, still below the visibility timeout.
@celery_app.task(name=TRAIN_MODEL_TASK, bind=True, time_limit=3300, soft_time_limit=3240)
def train_model(self, job_id: int) -> str:  # type: ignore[no-untyped-def]
    """Run one training job; a job already claimed by another live task is skipped."""
    return train_model_impl(job_id=job_id, task_id=self.request.id or "")

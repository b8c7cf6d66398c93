"""Thin task wrappers: ids in, a pipeline function does the work."""

from __future__ import annotations

from app.core.queue import SCORE_SERIES_TASK
from workers.celery_app import celery_app
from workers.pipelines.score import score_series_impl


@celery_app.task(name=SCORE_SERIES_TASK, bind=True)
def score_series(self, series_id: int, revision: int) -> str:  # type: ignore[no-untyped-def]
    """Score one (series, revision); safe to run twice (fenced by the attempt number)."""
    return score_series_impl(series_id=series_id, revision=revision, task_id=self.request.id or "")

"""The scoring task: ids in, ``score.score_series_impl`` does the work (this module and what it imports is
all a scoring worker loads: never training or evaluation code)."""

from __future__ import annotations

from app.core.broker import SCORE_SERIES_TASK
from workers.celery_app import celery_app
from workers.serving.score import score_series_impl


@celery_app.task(name=SCORE_SERIES_TASK, bind=True)
def score_series(self, series_id: int, revision: int) -> str:  # type: ignore[no-untyped-def]
    """Score and route one (series, revision); safe to run twice (fenced by the attempt number)."""
    return score_series_impl(series_id=series_id, revision=revision, task_id=self.request.id or "")

"""Training jobs are bounded (issue #15): a job's size in steps and the number queued or running at once;
a refusal is a clear 4xx that changes nothing. On PostgreSQL and on SQLite, over real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from tests.conftest import Stack

pytestmark = pytest.mark.integration
LIMITS = {"GATEKEEPER_TRAINING_MAX_STEPS": "500", "GATEKEEPER_TRAINING_MAX_ACTIVE_JOBS": "2"}


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def limited(request, stack_factory) -> Stack:  # type: ignore[no-untyped-def]
    # no worker: the jobs stay queued, as they would behind a busy training worker
    return stack_factory(worker=False, database=request.param, **LIMITS)


def execute(stack: Stack, sql: str, **params: object) -> None:
    """A job's state changed behind the API's back, as the training worker would."""
    with stack.engine.begin() as conn:
        conn.execute(text(sql), params)


def counts(stack: Stack) -> tuple[object, ...]:
    return tuple(stack.scalar(f"SELECT count(*) FROM {t}") for t in ("training_jobs", "outbox", "audit_events"))


def job(kind: str, **params: int) -> dict:
    return {"kind": kind, "params": {"steps": 10, "encoder_steps": 0, **params}}


def test_limits(limited: Stack) -> None:
    execute(limited, "UPDATE training_jobs SET status = 'failed'")
    with limited.client("ml_engineer") as eng:
        before = counts(limited)
        # a scorer's size is its GAN steps and its encoder steps together
        r = eng.post("/training-jobs", json=job("scorer", steps=400, encoder_steps=200))
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == ("steps + encoder_steps = 600 is over the limit of 500 steps per training job "
                                      "(GATEKEEPER_TRAINING_MAX_STEPS)")  # fmt: skip
        r = eng.post("/training-jobs", json=job("segmenter", steps=501))
        assert r.status_code == 422 and "steps = 501 is over the limit of 500" in r.json()["detail"], r.text
        assert counts(limited) == before, "a refused job leaves no row, no outbox message, no audit event"

        # a segmenter has no encoder: its encoder_steps do not count; the limit itself is allowed
        assert eng.post("/training-jobs", json=job("segmenter", steps=500, encoder_steps=900)).status_code == 202
        first = eng.post("/training-jobs", json=job("scorer", steps=300, encoder_steps=200))
        assert first.status_code == 202, first.text
        full = counts(limited)
        r = eng.post("/training-jobs", json=job("segmenter"))
        assert r.status_code == 429, r.text
        assert r.json()["detail"] == (
            "2 training jobs are already queued or running, the limit is 2 (GATEKEEPER_TRAINING_MAX_ACTIVE_JOBS); "
            "try again when one has finished"
        )
        assert counts(limited) == full

        # running jobs count too; a finished one frees its place
        execute(limited, "UPDATE training_jobs SET status = 'running' WHERE id = :i", i=first.json()["id"])
        assert eng.post("/training-jobs", json=job("segmenter")).status_code == 429
        execute(limited, "UPDATE training_jobs SET status = 'succeeded' WHERE id = :i", i=first.json()["id"])
        assert eng.post("/training-jobs", json=job("segmenter")).status_code == 202


def test_concurrent_requests_cannot_overfill_the_queue(limited: Stack) -> None:
    execute(limited, "UPDATE training_jobs SET status = 'failed'")
    with limited.client("ml_engineer") as eng, ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: eng.post("/training-jobs", json=job("segmenter")).status_code, range(8)))
    assert statuses == [202, 202] + [429] * 6, statuses
    assert limited.scalar("SELECT count(*) FROM training_jobs WHERE status IN ('queued', 'running')") == 2

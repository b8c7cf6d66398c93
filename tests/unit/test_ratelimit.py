"""Failed-attempt counts (app/core/ratelimit.py): shared through a real Redis by every limiter (process) that
uses it, per process with the filesystem broker, and per process again while Redis does not answer."""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis

from app.core.ratelimit import REDIS_TIMEOUT_S, FailureLimiter, RedisFailureLimiter, failure_limiter
from app.processes import free_port
from testkit.servers import PrivateRedis

REDIS_URL = "redis://127.0.0.1:6379/0"  # the test machine's Redis (make test starts it)


@pytest.fixture
def client() -> str:
    return f"198.51.100.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:8]}"  # a key of its own in the shared server


def redis_up() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError:
        pytest.fail(f"no Redis at {REDIS_URL}")


def test_two_processes_share_one_count(client: str) -> None:
    redis_up()
    a, b = RedisFailureLimiter(REDIS_URL, 4, 30), RedisFailureLimiter(REDIS_URL, 4, 30)  # two API processes
    for limiter in (a, b, a):
        limiter.failed(client)
        assert a.retry_after(client) is None and b.retry_after(client) is None
    b.failed(client)  # the fourth, in all
    for limiter in (a, b):
        wait = limiter.retry_after(client)
        assert wait is not None and 1 <= wait <= 30, wait
    assert a.retry_after(client + "-other") is None  # another address is not affected
    # processes with other limits keep counts of their own (tests run APIs with different settings)
    assert RedisFailureLimiter(REDIS_URL, 5, 30).retry_after(client) is None


def test_the_shared_window_ends(client: str) -> None:
    redis_up()
    limiter = RedisFailureLimiter(REDIS_URL, 2, 0.4)
    limiter.failed(client)
    limiter.failed(client)
    assert limiter.retry_after(client) == 1  # less than a second left: rounded up, never 0
    deadline = time.monotonic() + 5
    while limiter.retry_after(client) is not None:
        assert time.monotonic() < deadline, "the window never ended"
        time.sleep(0.05)
    limiter.failed(client)  # a new window: one failure is under the limit
    assert limiter.retry_after(client) is None


def test_without_redis_each_process_counts_alone(client: str, caplog: pytest.LogCaptureFixture) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    limiter = RedisFailureLimiter(down, 3, 30)
    with caplog.at_level(logging.WARNING, logger="app.core.ratelimit"):
        for _ in range(3):
            assert limiter.retry_after(client) is None
            limiter.failed(client)  # no exception reaches the request
        wait = limiter.retry_after(client)
    assert wait is not None and 1 <= wait <= 30
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1 and client not in warnings[0].getMessage()  # once, not per attempt


def test_a_hung_redis_costs_one_timeout_not_one_per_request(client: str, tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    assert server.proc is not None
    try:
        limiter = RedisFailureLimiter(server.url, 2, 30)
        os.kill(server.proc.pid, signal.SIGSTOP)  # alive, but it never answers
        start = time.monotonic()
        limiter.failed(client)  # waits for the 0.5 s timeout, then counts in this process
        limiter.failed(client)  # Redis is left alone for a while: at once
        wait = limiter.retry_after(client)
        took = time.monotonic() - start
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
    assert wait is not None and 1 <= wait <= 30
    assert REDIS_TIMEOUT_S <= took < 2.4 * REDIS_TIMEOUT_S, took  # one timeout, not three


def test_the_broker_decides_where_counts_live() -> None:
    assert isinstance(failure_limiter(REDIS_URL, 20, 60), RedisFailureLimiter)
    assert isinstance(failure_limiter("filesystem://", 20, 60), FailureLimiter)  # the embedded set-up
    assert failure_limiter(REDIS_URL, 0, 60).retry_after("anyone") is None  # 0: no limit

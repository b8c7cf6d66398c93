"""Failed authentication attempts, limited per client address (a fixed window per client).

A client that sent ``max_failures`` invalid tokens within ``window_s`` seconds gets 429 with Retry-After on
every request, valid token or not, until its window ends: guessing stops paying before it starts.

Where the count lives: with a Redis broker, in Redis (``RedisFailureLimiter``), so every API process of a
deployment (``gatekeeper serve --workers N``, several hosts) shares one count per client and an attacker gets
the limit once, not N times. With the filesystem broker (the embedded set-up, no server) the count is per
process (``FailureLimiter``); so it is while Redis does not answer (then Redis is asked again after
``REDIS_RETRY_AFTER_S``, so a hung server costs one timeout, not one per request). Nothing is written to
the database per attempt, so a flood of bad tokens costs no database writes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

log = logging.getLogger(__name__)
REDIS_TIMEOUT_S = 0.5  # a slow Redis must not hold a request: past this, the process counts alone
REDIS_RETRY_AFTER_S = 5.0  # after a failure, Redis is left alone this long (a hung one costs one timeout)
# INCR, and the window's expiry set by the attempt that opened it, in one step (any Redis since 2.6).
_COUNT = "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n"


class Limiter(Protocol):
    def retry_after(self, client: str) -> int | None: ...

    def failed(self, client: str) -> None: ...


class FailureLimiter:
    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 65536) -> None:  # fmt: skip
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_clients = max_clients
        self._windows: dict[str, tuple[float, int]] = {}  # client -> (window start, failures in it)
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int | None:
        """Seconds the client must wait (None: it may try now)."""
        if self.max_failures <= 0:
            return None
        with self._lock:
            entry = self._windows.get(client)
            if entry is None:
                return None
            start, count = entry
            left = start + self.window_s - self.clock()
            if left <= 0:
                del self._windows[client]
                return None
            return max(1, math.ceil(left)) if count >= self.max_failures else None

    def failed(self, client: str) -> None:
        if self.max_failures <= 0:
            return
        with self._lock:
            now = self.clock()
            start, count = self._windows.get(client, (now, 0))
            if start + self.window_s <= now:
                start, count = now, 0
            if len(self._windows) >= self.max_clients and client not in self._windows:
                self._expire(now)
            self._windows[client] = (start, count + 1)

    def _expire(self, now: float) -> None:
        for key in [k for k, (start, _) in self._windows.items() if start + self.window_s <= now]:
            del self._windows[key]
        if len(self._windows) >= self.max_clients:  # a flood of distinct addresses: forget the oldest half
            for key in sorted(self._windows, key=lambda k: self._windows[k][0])[: self.max_clients // 2]:
                del self._windows[key]


class RedisFailureLimiter:
    """The same fixed window, counted in Redis: one count per client for every process that shares the
    server and the limits (the key names both, so processes configured differently never mix counts)."""

    def __init__(self, url: str, max_failures: int, window_s: float, fallback: FailureLimiter | None = None) -> None:
        self.max_failures = max_failures
        self.window_ms = max(1, round(window_s * 1000))
        self.prefix = f"gatekeeper:auth-failures:{max_failures}:{self.window_ms}:"
        self.redis = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                          socket_connect_timeout=REDIS_TIMEOUT_S)  # fmt: skip
        self.fallback = fallback or FailureLimiter(max_failures, window_s)
        self._count = self.redis.register_script(_COUNT)
        self._warned_at = -math.inf
        self._down_until = -math.inf

    def retry_after(self, client: str) -> int | None:
        if self.max_failures <= 0:
            return None
        if time.monotonic() < self._down_until:
            return self.fallback.retry_after(client)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(self.prefix + client)
            pipe.pttl(self.prefix + client)
            count, left_ms = pipe.execute()
        except redis.RedisError as exc:
            self._unavailable(exc)
            return self.fallback.retry_after(client)
        if count is None or int(count) < self.max_failures or left_ms <= 0:
            return self.fallback.retry_after(client)  # what this process counted while Redis was away
        return max(1, math.ceil(left_ms / 1000))

    def failed(self, client: str) -> None:
        if self.max_failures <= 0:
            return
        if time.monotonic() < self._down_until:
            self.fallback.failed(client)
            return
        try:
            self._count(keys=[self.prefix + client], args=[self.window_ms])
        except redis.RedisError as exc:
            self._unavailable(exc)
            self.fallback.failed(client)

    def _unavailable(self, exc: redis.RedisError) -> None:
        now = time.monotonic()
        self._down_until = now + REDIS_RETRY_AFTER_S
        if now - self._warned_at >= 60:  # once a minute, not once per guessed token
            self._warned_at = now
            log.warning("failed-attempt counts: Redis unavailable (%s); counting in this process alone",
                        type(exc).__name__)  # fmt: skip


def failure_limiter(broker_url: str, max_failures: int, window_s: float) -> Limiter:
    """Shared through Redis when the broker is Redis; per process otherwise (the filesystem broker)."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisFailureLimiter(broker_url, max_failures, window_s)
    return FailureLimiter(max_failures, window_s)

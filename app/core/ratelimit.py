"""Failed authentication attempts, limited per client address (a fixed window per client, in this process).

A client that sent ``max_failures`` invalid tokens within ``window_s`` seconds gets 429 with Retry-After on
every request, valid token or not, until its window ends: guessing stops paying before it starts. The
state is per API process (``gatekeeper serve --workers N`` allows up to N times the limit); nothing is
written per attempt, so a flood of bad tokens costs no database writes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


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

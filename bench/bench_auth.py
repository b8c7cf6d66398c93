"""What checking every request's token against the database costs (issue #15: no per-process token cache).

    .venv/bin/python bench/bench_auth.py                 # PostgreSQL at 127.0.0.1:5432 and SQLite, 3000 each

In process: ``app.core.security.authenticate`` inside ``session_scope()`` (what ``app.api.deps`` runs per
request), for a valid token, on a fresh migrated database; median and p99 per call in microseconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import processes  # noqa: E402
from testkit.servers import PG_ADMIN  # noqa: E402


def measure(url: str, n: int) -> tuple[float, float]:
    os.environ["GATEKEEPER_DATABASE_URL"] = url
    from app.core import config, db
    from app.core.security import Role, authenticate
    from app.services import tokens

    config.get_settings.cache_clear()
    db.get_engine.cache_clear()
    db._session_factory.cache_clear()
    settings = config.get_settings()
    with db.session_scope() as session:
        secret, _ = tokens.issue(session, role=Role.PACS, name=None, ttl_days=None, actor="bench")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with db.session_scope() as session:
            assert authenticate(session, secret, settings) is not None
        times.append((time.perf_counter() - t0) * 1e6)
    db.get_engine().dispose()
    times.sort()
    return statistics.median(times), times[int(0.99 * len(times))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    pg = processes.create_database(PG_ADMIN, "gk_bench_auth")
    try:
        processes.migrate(pg)
        print("postgresql: median {:.0f} us, p99 {:.0f} us per request".format(*measure(pg, args.n)))
    finally:
        processes.drop_database(PG_ADMIN, pg)
    with tempfile.TemporaryDirectory() as folder:
        lite = f"sqlite:///{folder}/a.sqlite"
        processes.migrate(lite)
        print("sqlite:     median {:.0f} us, p99 {:.0f} us per request".format(*measure(lite, args.n)))


if __name__ == "__main__":
    main()

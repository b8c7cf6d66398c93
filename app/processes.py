"""Start the API and a Celery worker as child processes (the demo, tests and benchmarks)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    env: dict[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    api: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        # start_new_session: a test can kill the whole group (prefork children too).
        return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=log,
                                start_new_session=True)  # fmt: skip

    def start_api(self, timeout_s: float = 60) -> None:
        self.api = self._spawn("api", [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                                       "--port", str(self.port), "--log-level", "warning",
                                       "--no-proxy-headers",
                                       "--http", "app.core.http_protocol:GuardedH11Protocol"])  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"API exited with {self.api.returncode}; see {self.log_dir / 'api.log'}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("API did not start")

    def start_worker(self, concurrency: int = 1) -> None:
        args = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool=prefork",
                f"--concurrency={concurrency}", "--queues=scoring,training,delivery", "--loglevel=INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
        self.worker = self._spawn("worker", args)

    def stop_api(self, sig: int = signal.SIGTERM) -> None:
        stop_group(self.api, sig)

    def stop_worker(self, sig: int = signal.SIGTERM) -> None:
        stop_group(self.worker, sig)

    def stop(self) -> None:
        self.stop_worker()
        self.stop_api()


def migrate(database_url: str) -> None:
    subprocess.run([sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"], cwd=ROOT,
                   env={**os.environ, "GATEKEEPER_DATABASE_URL": database_url}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def stop_group(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    """Signal a child's whole process group (prefork children too); SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _admin_execute(admin_url: str, sql: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE cannot run inside one)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def create_database(admin_url: str, prefix: str) -> str:
    """A new, empty PostgreSQL database next to admin_url's; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

"""Private servers a test may stop, flush and restart freely, and the stack of real processes on top of them.

Shared by the pytest fixtures (tests/conftest.py) and the long chaos runs (bench/chaos), so the short and
long versions of a fault scenario start exactly the same processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, text

from app import processes
from app.processes import Service, free_port, migrate

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
PG_ADMIN = os.environ.get("GATEKEEPER_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent


class PrivateRedis:
    """A redis-server of its own. persist=True: an append-only file fsynced on every write, so a restart
    (even after SIGKILL) keeps the broker's content; persist=False: nothing on disk, a restart flushes it."""

    def __init__(self, folder: Path, persist: bool = False) -> None:
        self.port = free_port()
        self.folder = folder / f"redis-{self.port}"  # its own dir: two servers never share an append-only file
        self.folder.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      *aof, "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                assert time.monotonic() < deadline, "private redis did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def wipe(self) -> None:
        """Delete what it kept on disk (while stopped): the next start is empty, as after a lost disk."""
        assert self.proc is None or self.proc.poll() is not None, "wipe a stopped server only"
        shutil.rmtree(self.folder)
        self.folder.mkdir()

    def keys(self) -> int:
        return int(redis.Redis.from_url(self.url).dbsize())


class PrivatePostgres:
    """A throw-away cluster (initdb) on its own port, trust auth."""

    def __init__(self) -> None:
        assert PG_BIN is not None, "PostgreSQL binaries not found"
        self.port = free_port()
        # its own folder under /tmp: the postgres user must reach it (pytest's tmp dirs are private to root)
        folder = Path(tempfile.mkdtemp(prefix="gk-pg-"))
        os.chmod(folder, 0o777)
        self.folder = folder
        self.data = folder / "pgdata"
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"], check=True,
                       capture_output=True, user="postgres" if _is_root() else None)  # fmt: skip
        self.log = folder / "pg.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args], check=True,
                       capture_output=True, user="postgres" if _is_root() else None)  # fmt: skip

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1", "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _is_root() -> bool:
    return os.geteuid() == 0


def make_token(env: dict[str, str], role: str) -> str:
    """A new token of ``role`` with a generated name (two unrevoked tokens never share one)."""
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "gatekeeper"), "token", "create", "--role", role],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def register_model(env: dict[str, str], kind: str, path: Path) -> int:
    """Register and promote a checkpoint the way an operator does (``gatekeeper models register --promote``);
    the new version's id."""
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "gatekeeper"), "models", "register", "--kind", kind, "--file",
                          str(path), "--promote"], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return int(out.stdout.split("(id ")[1].split(")")[0])


class Stack:
    """A running service with its own database, Redis and storage, plus helpers."""

    def __init__(self, service: Service, database_url: str) -> None:
        self.service = service
        self.database_url = database_url
        self.engine = create_engine(database_url)
        self.tokens = {
            role: make_token(service.env, role)
            for role in ("pacs", "radiologist", "ml_engineer", "admin", "monitoring")
        }

    def client(self, role: str | None = "pacs", **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        kw.setdefault("timeout", 60)
        return httpx.Client(base_url=self.service.url, headers=headers, **kw)  # type: ignore[arg-type]

    def scalar(self, sql: str, **params: object) -> object:
        with self.engine.begin() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: object) -> list[tuple]:
        with self.engine.begin() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    @property
    def storage(self) -> Path:
        return Path(self.service.env["GATEKEEPER_STORAGE_DIR"])

    def wait_published(self, timeout_s: float = 30) -> None:
        """Until the relay has published at least one outbox row."""
        deadline = time.monotonic() + timeout_s
        while self.scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 0:
            assert time.monotonic() < deadline, "the relay never published"
            time.sleep(0.1)

    def wait_status(self, series_uid: str, statuses: set[str], timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        with self.client() as c:
            while time.monotonic() < deadline:
                r = c.get(f"/series/{series_uid}")
                if r.status_code == 200 and r.json()["status"] in statuses:
                    return r.json()
                time.sleep(0.2)
        raise AssertionError(f"series not in {statuses} after {timeout_s} s: {r.status_code} {r.text[:200]}")


class StackFactory:
    """Makes stacks (each with a fresh database, a private Redis and its own storage); close() tears all down.

    ``mkdir(name)`` gives a new folder per stack (pytest's tmp_path_factory.mktemp, or a plain one).
    """

    def __init__(self, mkdir) -> None:  # type: ignore[no-untyped-def]
        self.mkdir = mkdir
        self.made: list[Stack] = []
        self.brokers: list[PrivateRedis] = []
        self.pinned: set[int] = set()  # ids of the session's shared stacks: kept to the end
        self.crashes: list[str] = []

    def __call__(self, worker: bool = True, database: str = "postgresql", **overrides: str) -> Stack:
        """database: "postgresql" (a fresh database on the shared server) or "sqlite" (the embedded default
        that `make run` uses: one file in the stack's folder, shared by the API and the worker)."""
        root = Path(self.mkdir("stack"))
        if database == "sqlite":
            url = f"sqlite:///{root}/gatekeeper.sqlite"
        else:
            assert database == "postgresql", database
            url = processes.create_database(PG_ADMIN, "gk_test")
        migrate(url)
        broker = PrivateRedis(root)  # a real redis-server of its own: stacks never share a broker
        broker.start()
        self.brokers.append(broker)
        env = {
            "GATEKEEPER_DATABASE_URL": url,
            "GATEKEEPER_BROKER_URL": broker.url,
            "GATEKEEPER_STORAGE_DIR": str(root / "storage"),
            "GATEKEEPER_SERIES_STABLE_AGE_S": "2",
            "GATEKEEPER_DISPATCH_INTERVAL_S": "0.2",
            "GATEKEEPER_RECONCILE_AFTER_S": "3",
            "GATEKEEPER_ORPHAN_SWEEP_INTERVAL_S": "12",  # the cadence test stacks had: 60 ticks of 0.2 s
            "GATEKEEPER_MAX_BODY_BYTES": str(64 * 1024**2),
            "GATEKEEPER_LOG_LEVEL": "DEBUG",
            "GATEKEEPER_AUTH_MAX_FAILURES": "100000",  # tests send many bad tokens from one address on purpose
            **overrides,
        }
        service = Service(env=env, log_dir=root / "logs")
        service.start_api()
        if worker:
            service.start_worker()
        stack = Stack(service, url)
        stack.broker = broker  # type: ignore[attr-defined]
        self.made.append(stack)
        return stack

    def pin(self, stack: Stack) -> Stack:
        """Keep ``stack`` until ``close`` (the session's shared stacks)."""
        self.pinned.add(id(stack))
        return stack

    def _stop(self, stack: Stack) -> None:
        stack.service.stop()
        stack.engine.dispose()
        if stack.database_url.startswith("postgresql"):
            processes.drop_database(PG_ADMIN, stack.database_url)
        for log in stack.service.log_dir.rglob("api.log"):
            if "Exception in ASGI application" in log.read_text(errors="replace"):
                self.crashes.append(str(log))

    def release_since(self, count: int) -> None:
        """Stop the unpinned stacks made after the first ``count``: a test module's own stacks, at its end.

        Each idle stack polls its database five times a second and keeps a worker and a redis-server; kept
        to the end of the session they added up to a load of 7-9 on two cores and slowed every later test."""
        keep, done = self.made[:count], self.made[count:]
        for stack in done:
            if id(stack) in self.pinned:
                keep.append(stack)
                continue
            self._stop(stack)
            broker = getattr(stack, "broker", None)
            if broker is not None:
                broker.stop()
                self.brokers.remove(broker)
        self.made = keep

    def close(self) -> list[str]:
        """Stop everything; the API logs that show an unhandled exception (a bug even behind a status code)."""
        for stack in self.made:
            self._stop(stack)
        for broker in self.brokers:
            broker.stop()
        self.made, self.brokers = [], []
        return self.crashes

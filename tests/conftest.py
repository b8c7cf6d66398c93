"""Fixtures: a fresh PostgreSQL database, Redis, and the API + a Celery worker as real processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from app import processes
from app.processes import Service, migrate
from tests.servers import PrivateRedis

PG_ADMIN = os.environ.get("GATEKEEPER_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA_DIR", ROOT.parent / "shared" / "data"))


def create_database() -> str:
    url = processes.create_database(PG_ADMIN, "gk_test")
    migrate(url)
    return url


def drop_database(url: str) -> None:
    processes.drop_database(PG_ADMIN, url)


def make_token(env: dict[str, str], role: str) -> str:
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "gatekeeper"), "token", "create", "--role", role, "--name", "t"],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


class Stack:
    """A running service with its own database, Redis db and storage, plus helpers."""

    def __init__(self, service: Service, database_url: str) -> None:
        self.service = service
        self.database_url = database_url
        self.engine = create_engine(database_url)
        self.tokens = {role: make_token(service.env, role) for role in ("pacs", "radiologist", "ml_engineer", "admin")}

    def client(self, role: str | None = "pacs", **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.service.url, headers=headers, timeout=60, **kw)  # type: ignore[arg-type]

    def scalar(self, sql: str, **params: object) -> object:
        with self.engine.begin() as conn:
            return conn.execute(text(sql), params).scalar()

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


@pytest.fixture(scope="session")
def stack_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []
    brokers: list[PrivateRedis] = []

    def make(worker: bool = True, **overrides: str) -> Stack:
        url = create_database()
        root = tmp_path_factory.mktemp("stack")
        broker = PrivateRedis(root)  # a real redis-server of its own: stacks never share a broker
        broker.start()
        brokers.append(broker)
        env = {
            "GATEKEEPER_DATABASE_URL": url,
            "GATEKEEPER_BROKER_URL": broker.url,
            "GATEKEEPER_STORAGE_DIR": str(root / "storage"),
            "GATEKEEPER_SERIES_STABLE_AGE_S": "2",
            "GATEKEEPER_DISPATCH_INTERVAL_S": "0.2",
            "GATEKEEPER_RECONCILE_AFTER_S": "3",
            "GATEKEEPER_MAX_BODY_BYTES": str(64 * 1024**2),
            "GATEKEEPER_LOG_LEVEL": "DEBUG",
            "GATEKEEPER_TOKEN_CACHE_S": "0",  # tests change tokens under the running API
            **overrides,
        }
        service = Service(env=env, log_dir=root / "logs")
        service.start_api()
        if worker:
            service.start_worker()
        stack = Stack(service, url)
        made.append(stack)
        return stack

    yield make
    crashes = []
    for stack in made:
        stack.service.stop()
        stack.engine.dispose()
        drop_database(stack.database_url)
        for log in stack.service.log_dir.rglob("api.log"):
            if "Exception in ASGI application" in log.read_text(errors="replace"):
                crashes.append(str(log))
    for broker in brokers:
        broker.stop()
    # An unhandled exception in the API is a bug even when the client saw a status code.
    assert not crashes, f"unhandled exceptions in the API, see {crashes}"


@pytest.fixture(scope="session")
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    """The shared service for tests that use fresh UIDs and so do not disturb each other."""
    return stack_factory()


@pytest.fixture
def pacs(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client("pacs") as c:
        yield c


def real_series_dir(case: str) -> Path:
    folder = DATA_DIR / "ct" / case / "ct-dicom"
    if not folder.is_dir():
        pytest.skip(f"real CT data not found at {folder} (set GATEKEEPER_DATA_DIR to ../shared/data)")
    return folder

"""Broker and database restarts (short versions), on private servers this test may kill."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.client import stow
from app.processes import migrate
from tests.conftest import Stack
from tests.dicom_factory import make_series, uid_of
from tests.servers import PrivatePostgres, PrivateRedis

pytestmark = pytest.mark.integration


def test_broker_restarts_lose_nothing(stack_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Redis restarted 5 times during a push; it keeps nothing on disk, so each restart also flushes it."""
    broker = PrivateRedis(tmp_path)
    broker.start()
    stack: Stack = stack_factory(GATEKEEPER_BROKER_URL=broker.url, GATEKEEPER_RECONCILE_AFTER_S="2")
    codes: list[int] = []
    uids: list[str] = []

    def push() -> None:
        with stack.client("pacs") as c:
            for _ in range(10):
                spec, blobs = make_series(4)
                codes.append(stow(c, blobs).status_code)
                codes.append(c.post(f"/series/{spec.series_uid}/complete").status_code)
                uids.append(spec.series_uid)
                time.sleep(0.2)

    sender = threading.Thread(target=push)
    sender.start()
    try:
        for _ in range(5):
            time.sleep(0.5)
            broker.stop()
            time.sleep(0.3)
            broker.start()
        last_restart = time.monotonic()
        sender.join(timeout=120)
        assert set(codes) == {200}, "ingest must keep answering while the broker restarts"
        for uid in uids:
            stack.wait_status(uid, {"manual"}, timeout_s=60)
        print(f"all {len(uids)} series routed {time.monotonic() - last_restart:.1f} s after the last restart")
    finally:
        stack.service.stop()
        broker.stop()


def test_database_restart_gives_503_then_recovers(stack_factory) -> None:  # type: ignore[no-untyped-def]
    pg = PrivatePostgres()
    pg.start()
    try:
        migrate(pg.url)
        stack: Stack = stack_factory(worker=False, GATEKEEPER_DATABASE_URL=pg.url)
        _, blobs = make_series(30)
        headers = {"Authorization": f"Bearer {stack.tokens['pacs']}"}
        with httpx.Client(base_url=stack.service.url, headers=headers, timeout=30) as c:
            for blob in blobs[:10]:
                assert c.post("/instances", content=blob).status_code == 200
            pg.stop()
            down = [c.post("/instances", content=blob).status_code for blob in blobs[10:20]]
            assert set(down) == {503}, down  # never 200 while the database is down
            assert c.get("/readyz").status_code == 503
            pg.start()
            deadline = time.monotonic() + 30
            while c.post("/instances", content=blobs[10]).status_code != 200:
                assert time.monotonic() < deadline, "ingest did not recover by itself"
                time.sleep(0.2)
            for blob in blobs[11:]:
                assert c.post("/instances", content=blob).status_code == 200
        engine = create_engine(pg.url)
        with engine.connect() as conn:
            stored = {r[0] for r in conn.execute(text("SELECT sop_instance_uid FROM instances"))}
        engine.dispose()
        assert stored == {uid_of(b) for b in blobs}
        stack.service.stop()
    finally:
        pg.remove()

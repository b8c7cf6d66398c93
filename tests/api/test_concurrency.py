"""Races that a real PACS produces: several API processes, duplicate storms."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.client import stow
from app.processes import Service
from testkit.dicom_factory import make_series
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_duplicate_storm_stores_each_instance_once(stack: Stack) -> None:
    spec, blobs = make_series(10)

    def push(_: int) -> int:
        with stack.client() as c:
            return stow(c, blobs).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(push, range(16)))
    assert set(codes) == {200}
    rows = stack.scalar("SELECT count(*) FROM instances i JOIN series s ON s.id=i.series_id WHERE s.series_uid=:u",
                        u=spec.series_uid)  # fmt: skip
    assert rows == 10
    paths = stack.scalar("SELECT count(DISTINCT storage_path) FROM instances i JOIN series s ON s.id=i.series_id "
                         "WHERE s.series_uid=:u", u=spec.series_uid)  # fmt: skip
    assert paths == 10
    # one file per row on disk: the losing requests of each race removed their copies at once
    objects = Path(stack.service.env["GATEKEEPER_STORAGE_DIR"]) / "objects"
    stored = sum(1 for _ in objects.rglob("*.dcm"))
    assert stored == stack.scalar("SELECT count(*) FROM instances")


def test_two_api_processes_complete_a_series_once(stack: Stack) -> None:
    second = Service(env=stack.service.env, log_dir=stack.service.log_dir / "second")
    second.start_api()
    try:
        spec, blobs = make_series(6)
        token = {"Authorization": f"Bearer {stack.tokens['pacs']}"}
        with (
            stack.client() as a,
            httpx.Client(base_url=second.url, headers=token, timeout=60) as b,
            ThreadPoolExecutor(2) as pool,
        ):
            codes = list(pool.map(lambda args: stow(*args).status_code, [(a, blobs[:3]), (b, blobs[3:])]))
        assert codes == [200, 200]
        state = stack.wait_status(spec.series_uid, {"manual"})
        assert state["geometry"]["n_slices"] == 6
        assert stack.scalar("SELECT count(*) FROM outbox WHERE series_id=:i", i=state["id"]) == 1
        completed = stack.scalar("SELECT count(*) FROM audit_events WHERE action='series.completed' AND entity_id=:i",
                                 i=str(state["id"]))  # fmt: skip
        assert completed == 1
    finally:
        second.stop()

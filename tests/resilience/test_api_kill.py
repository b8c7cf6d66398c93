"""API kill (short version): SIGKILL the API while a PACS client pushes and retries.

Every acknowledged instance must be on disk with its sha256 and in the database,
no row may lack its file, and files left by a kill between rename and commit
are swept.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack
from tests.dicom_factory import make_series, uid_of

pytestmark = pytest.mark.integration
KILLS = 5


def _push_until_acknowledged(url: str, token: str, blob: bytes, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            r = httpx.post(f"{url}/instances", content=blob, headers={"Authorization": f"Bearer {token}"}, timeout=10)
            if r.status_code == 200:
                return True
        except httpx.HTTPError:
            pass  # the API is down: a PACS retries
        time.sleep(0.05)
    return False


def test_acknowledged_instances_survive_api_kills(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = stack_factory(worker=False, GATEKEEPER_ORPHAN_MIN_AGE_S="1")
    _, blobs = make_series(60, rows=64, cols=64)
    acknowledged: list[bytes] = []
    stop = threading.Event()

    def client() -> None:
        for blob in blobs:
            if _push_until_acknowledged(stack.service.url, stack.tokens["pacs"], blob, stop):
                acknowledged.append(blob)

    sender = threading.Thread(target=client)
    sender.start()
    for _ in range(KILLS):
        time.sleep(0.4)
        stack.service.stop_api(signal.SIGKILL)
        stack.service.start_api()
    sender.join(timeout=120)
    stop.set()
    assert len(acknowledged) == len(blobs), "the client could not finish after the kills"

    storage = Path(stack.service.env["GATEKEEPER_STORAGE_DIR"])
    with stack.engine.connect() as conn:
        from sqlalchemy import text

        rows = {uid: (sha, path) for uid, sha, path in conn.execute(
            text("SELECT sop_instance_uid, sha256, storage_path FROM instances"))}  # fmt: skip
    for blob in acknowledged:
        sha, path = rows[uid_of(blob)]
        assert sha == hashlib.sha256(blob).hexdigest()
        assert hashlib.sha256((storage / path).read_bytes()).hexdigest() == sha
    for _uid, (_sha, path) in rows.items():
        assert (storage / path).is_file(), "a row without its file"
    # files a kill left between rename and commit are swept (the sweep runs every 60 dispatcher ticks)
    referenced = {p for _, p in rows.values()}
    deadline = time.monotonic() + 60
    while True:
        orphans = [
            f for f in (storage / "objects").rglob("*.dcm") if f.relative_to(storage).as_posix() not in referenced
        ]
        if not orphans:
            break
        assert time.monotonic() < deadline, f"{len(orphans)} orphan file(s) never swept"
        time.sleep(0.5)

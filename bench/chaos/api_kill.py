"""API kill: SIGKILL the API again and again while PACS clients push (peer push and STOW-RS) and retry.

Every acknowledged instance (a 200) must be in the database and on disk with its sha256; no row may lack
its file; the files a kill left behind (an upload in tmp/, or a rename before the commit) must be swept.
"""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time

import httpx

from app.client import stow
from bench.chaos.common import files_on_disk
from testkit.dicom_factory import make_series, uid_of
from testkit.servers import Stack

SHORT = {"kills": 5}
LONG = {"kills": 20}
STOW_BATCH = 5


class Client:
    """A PACS that sends new instances until told to stop, each one (or batch) again until it gets a 200."""

    def __init__(self, stack: Stack, peer_push: bool) -> None:
        self.stack, self.peer_push = stack, peer_push
        self.acknowledged: list[bytes] = []
        self.requests = self.refused = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop)

    def _send(self, c: httpx.Client, blobs: list[bytes]) -> bool:
        self.requests += 1
        try:
            r = c.post("/instances", content=blobs[0]) if self.peer_push else stow(c, blobs)
        except httpx.HTTPError:
            r = None  # the API is down or died mid-request: a PACS retries
        if r is not None and r.status_code == 200:
            return True
        self.refused += 1
        time.sleep(0.05)
        return False

    def _loop(self) -> None:
        size = 1 if self.peer_push else STOW_BATCH
        try:
            with self.stack.client("pacs", timeout=10) as c:
                while not self.stop.is_set():
                    _, blobs = make_series(size, rows=64, cols=64)
                    deadline = time.monotonic() + 120
                    while not self._send(c, blobs):
                        assert time.monotonic() < deadline, "the API never came back"
                    self.acknowledged += blobs
        except BaseException as exc:  # noqa: BLE001 - reported by run(), which fails the scenario
            self.error = exc


def run(make_stack, workdir, *, kills: int, seed: int = 5) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    stack: Stack = make_stack(worker=False, GATEKEEPER_ORPHAN_MIN_AGE_S="1")
    rng = random.Random(seed)
    clients = [Client(stack, peer_push=True), Client(stack, peer_push=False)]
    for client in clients:
        client.thread.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.0))  # the clients are mid-request most of the time
            stack.service.stop_api(signal.SIGKILL)
            stack.service.start_api()
        for client in clients:
            client.stop.set()
            client.thread.join(timeout=150)
            assert not client.thread.is_alive(), "a client could not finish after the kills"
            assert client.error is None, f"a client failed: {client.error!r}"
        rows = {uid: (sha, path) for uid, sha, path in stack.rows("SELECT sop_instance_uid, sha256, storage_path "
                                                                  "FROM instances")}  # fmt: skip
        referenced = {path for _, path in rows.values()}
        orphans_found = len(files_on_disk(stack) - referenced) + sum(1 for _ in (stack.storage / "tmp").iterdir())
        # the dispatcher sweeps every GATEKEEPER_ORPHAN_SWEEP_INTERVAL_S (12 s here) files older than
        # GATEKEEPER_ORPHAN_MIN_AGE_S that no live upload owns
        deadline = time.monotonic() + 60
        while files_on_disk(stack) - referenced or any((stack.storage / "tmp").iterdir()):
            assert time.monotonic() < deadline, "orphan files never swept"
            time.sleep(0.5)
    finally:
        stack.service.stop()
    acknowledged = [blob for client in clients for blob in client.acknowledged]
    lost = 0
    for blob in acknowledged:
        sha, path = rows.get(uid_of(blob), (None, None))
        on_disk = (stack.storage / path).read_bytes() if path and (stack.storage / path).is_file() else b""
        lost += not (sha == hashlib.sha256(blob).hexdigest() == hashlib.sha256(on_disk).hexdigest())
    rows_without_file = sum(not (stack.storage / p).is_file() for p in referenced)
    # not a vacuous pass: both clients got instances through, and the kills did cut requests
    assert all(c.acknowledged for c in clients) and any(c.refused for c in clients), "the push did not overlap"
    assert not lost, f"{lost} acknowledged instance(s) missing or altered"
    assert not rows_without_file, f"{rows_without_file} row(s) without their file"
    return {
        "kills": kills,
        "runs": sum(c.requests for c in clients),
        "requests_refused_or_cut": sum(c.refused for c in clients),
        "files_tried": len(acknowledged),
        "acknowledged": len(acknowledged),
        "rows": len(rows),
        "rows_without_file": rows_without_file,
        "orphans_found_then_swept": orphans_found,
        "lost": lost,
        "seconds": round(time.monotonic() - t0, 1),
    }

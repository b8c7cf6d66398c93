"""The orphan sweep (issue #12 item 8) deletes only what no live upload or pending commit owns.

A stack of its own sweeps every 0.2 s with a minimum age of 0.5 s, so a trickled upload and a commit held
up by a row lock both outlive the age many times over; each test proves a sweep ran while the files were
old (a planted orphan disappears) before it lets the upload finish.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from app.client import stow
from testkit.dicom_factory import make_series, uid_of
from tests.conftest import Stack

pytestmark = pytest.mark.integration
MIN_AGE_S = 0.5


@pytest.fixture(scope="module")
def sweeping(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory(worker=False, GATEKEEPER_ORPHAN_MIN_AGE_S=str(MIN_AGE_S),
                         GATEKEEPER_ORPHAN_SWEEP_INTERVAL_S="0.2")  # fmt: skip


def _files(stack: Stack) -> list[Path]:
    return [p for p in [*(stack.storage / "tmp").iterdir(), *(stack.storage / "objects").rglob("*.dcm")]
            if not p.name.startswith("planted-")]  # fmt: skip


def _wait_old_then_swept(stack: Stack, timeout_s: float = 60) -> None:
    """Until every file is older than the minimum age, then until a sweep has removed a planted orphan."""
    deadline = time.monotonic() + timeout_s
    while any(p.stat().st_mtime > time.time() - MIN_AGE_S - 0.2 for p in _files(stack) if p.exists()):
        assert time.monotonic() < deadline, "files never aged"
        time.sleep(0.05)
    planted = stack.storage / "tmp" / f"planted-{uuid.uuid4().hex}.part"
    planted.write_bytes(b"orphan")
    os.utime(planted, (time.time() - 3600, time.time() - 3600))
    while planted.exists():
        assert time.monotonic() < deadline, "the sweep never ran"
        time.sleep(0.05)


def _instance_file(stack: Stack, blob: bytes) -> Path:
    path = stack.scalar("SELECT storage_path FROM instances WHERE sop_instance_uid = :u", u=uid_of(blob))
    assert path is not None, "no row"
    return stack.storage / str(path)


def test_a_trickled_upload_keeps_its_parts(sweeping: Stack) -> None:
    spec, blobs = make_series(2)
    boundary = "trickle"

    def body() -> Iterator[bytes]:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + blobs[0]
        # part 1 is finished and waits in tmp/; part 2 is half written
        yield f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + blobs[1][:200]
        _wait_old_then_swept(sweeping)
        yield blobs[1][200:] + f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    with sweeping.client("pacs") as pacs:
        r = pacs.post("/dicomweb/studies", content=body(), headers=headers)
    assert r.status_code == 200, r.text
    assert all(_instance_file(sweeping, b).is_file() for b in blobs)


def test_an_object_waiting_for_its_commit_is_not_swept(sweeping: Stack) -> None:
    spec, blobs = make_series(2)
    with sweeping.client("pacs") as pacs, ThreadPoolExecutor(1) as pool:
        assert stow(pacs, blobs[:1]).status_code == 200
        before = len(_files(sweeping))
        with sweeping.engine.connect() as conn:
            # Hold the series row: the second instance is renamed into objects/ and then waits for its commit.
            tx = conn.begin()
            conn.execute(text("SELECT id FROM series WHERE series_uid = :u FOR UPDATE"), {"u": spec.series_uid})
            pending = pool.submit(stow, pacs, blobs[1:])
            deadline = time.monotonic() + 30
            while len(_files(sweeping)) <= before:
                assert time.monotonic() < deadline, "the second instance never reached objects/"
                time.sleep(0.05)
            _wait_old_then_swept(sweeping)
            tx.rollback()
        r = pending.result(timeout=60)
        assert r.status_code == 200, r.text
        assert _instance_file(sweeping, blobs[1]).is_file(), "an acknowledged instance lost its file"
        wado = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/instances/{uid_of(blobs[1])}")
        assert wado.status_code == 200


def test_a_real_orphan_is_still_swept(sweeping: Stack) -> None:
    folder = sweeping.storage / "objects" / "ff" / "0123456789abcdef"
    folder.mkdir(parents=True, exist_ok=True)
    orphan = folder / f"{'0' * 64}-{uuid.uuid4().hex[:8]}.dcm"  # a crash between rename and commit
    orphan.write_bytes(b"x")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    _wait_old_then_swept(sweeping)
    deadline = time.monotonic() + 30
    while orphan.exists():
        assert time.monotonic() < deadline, "a real orphan was never swept"
        time.sleep(0.05)

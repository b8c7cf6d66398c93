"""Small helpers shared by the scenarios: process trees, waiting on series, registering models."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from testkit import servers
from testkit.servers import Stack

FINAL = ("auto", "manual", "failed")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def statuses(stack: Stack, uids: list[str]) -> dict[str, str]:
    rows = stack.rows("SELECT series_uid, status FROM series WHERE series_uid = ANY(:u)", u=uids)
    return dict(rows)  # type: ignore[arg-type]


def wait_final(stack: Stack, uids: list[str], timeout_s: float) -> float:
    """Until every series is AUTO, MANUAL or FAILED; the time it took. Fails naming the stragglers."""
    t0 = time.monotonic()
    while True:
        now = statuses(stack, uids)
        left = [u for u in uids if now.get(u) not in FINAL]
        if not left:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"{len(left)} series not finished after {timeout_s:.0f} s: "
                                 f"{sorted({now.get(u, 'missing') for u in left})}")  # fmt: skip
        time.sleep(0.1)


def register_model(stack: Stack, kind: str, path: Path) -> None:
    servers.register_model(stack.service.env, kind, path)


def files_on_disk(stack: Stack) -> set[str]:
    """Instance files under objects/, as the storage_path a row would hold."""
    return {p.relative_to(stack.storage).as_posix() for p in (stack.storage / "objects").rglob("*.dcm")}

"""Worker kill (short version): SIGKILL the worker's child at random while series are scored.

Every series must end AUTO, MANUAL or FAILED; none lost or stuck; one decision
per (series, revision, scorer version); no series attempted more than the cap.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from app.client import stow
from tests.conftest import ROOT, Stack
from tests.dicom_factory import make_series
from tests.tiny_models import train_tiny_scorer, with_series_threshold

pytestmark = pytest.mark.integration
SERIES, KILLS = 8, 6


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_series_finish_despite_worker_kills(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = stack_factory(GATEKEEPER_MODELS_DIR=str(tmp_path / "registry"), GATEKEEPER_RECONCILE_AFTER_S="2")
    scorer = with_series_threshold(train_tiny_scorer(tmp_path / "scorer"), 1e9, tmp_path / "s.pt")
    subprocess.run([str(ROOT / ".venv/bin/gatekeeper"), "models", "register", "--kind", "scorer", "--file",
                    str(scorer), "--promote"], env={**os.environ, **stack.service.env}, check=True,
                   capture_output=True)  # fmt: skip
    uids = []
    with stack.client("pacs") as c:
        for _ in range(SERIES):
            spec, blobs = make_series(12, rows=128, cols=128)
            assert stow(c, blobs).status_code == 200
            c.post(f"/series/{spec.series_uid}/complete")
            uids.append(spec.series_uid)
    rng = random.Random(3)
    kills = 0
    deadline = time.monotonic() + 60
    while kills < KILLS and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.6))
        assert stack.service.worker is not None
        for child in _children(stack.service.worker.pid):
            for grandchild in _children(child) or [child]:
                try:
                    os.kill(grandchild, signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
    for uid in uids:
        stack.wait_status(uid, {"auto", "manual", "failed"}, timeout_s=120)
    assert stack.scalar("SELECT max(attempts) FROM series WHERE status <> 'derived'") <= 4  # cap 3, 4th claim gives up
    assert (
        stack.scalar(
            "SELECT count(*) FROM (SELECT series_id, revision, scorer_key FROM series_decisions "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
        )
        == 0
    )
    retried = stack.scalar("SELECT count(*) FROM series WHERE attempts > 1")
    print(f"kills: {kills}, series claimed more than once: {retried}")

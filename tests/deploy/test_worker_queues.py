"""The compose file's worker commands, run for real against a Redis broker: the scoring worker consumes only
the scoring queue, the training worker only the training queue (asked of the running worker by Celery's
remote control), and the health check command of the compose file answers for each."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.processes import stop_group
from testkit.servers import PrivateRedis
from tests.conftest import ROOT
from tests.deploy.conftest import WORKERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent  # gatekeeper and celery, as on the image's PATH


def _inspect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "workers.celery_app", "inspect", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.timeout(420)
@pytest.mark.parametrize("name", WORKERS)
def test_worker_consumes_only_its_queue_and_passes_its_health_check(config: dict, name: str, tmp_path: Path) -> None:
    broker = PrivateRedis(tmp_path)
    broker.start()
    service = config["services"][name]
    # the container's environment, with this machine's broker, database and folders in place of the compose ones
    local = {"GATEKEEPER_BROKER_URL": broker.url, "GATEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
             "GATEKEEPER_STORAGE_DIR": str(tmp_path / "s"), "GATEKEEPER_MODELS_DIR": str(tmp_path / "m"),
             "GATEKEEPER_DATA_DIR": str(tmp_path / "c")}  # fmt: skip
    env = {**os.environ, **service["environment"], **local, "HOSTNAME": socket.gethostname(),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    command = service["command"]
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 240  # a worker imports torch and MONAI: minutes on 2 busy cores
        while True:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            done = _inspect(env, "active_queues", "--json", "--timeout", "5")
            if done.returncode == 0 and done.stdout.strip():
                break
            assert time.monotonic() < deadline, f"the worker never answered: {done.stderr[-500:]}"
            time.sleep(1)
        (queues,) = json.loads(done.stdout.strip().splitlines()[-1]).values()
        expected = service["command"][service["command"].index("--queues") + 1].split(",")
        assert sorted(q["name"] for q in queues) == sorted(expected) and "training" not in set(expected) - {"training"}
        assert ("training" in expected) == (expected == ["training"]), expected  # training shares with nothing
        health = service["healthcheck"]["test"]
        assert health[0] == "CMD-SHELL"
        check = subprocess.run(["sh", "-c", health[1].replace("$$", "$")], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert check.returncode == 0 and "pong" in check.stdout, check.stdout + check.stderr
    finally:
        stop_group(worker)
        broker.stop()

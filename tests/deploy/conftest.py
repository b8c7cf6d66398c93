"""The compose file through a real Compose parser (Debian's docker-compose 1.29, installed if missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
WORKERS = ("worker-scoring", "worker-training")


@pytest.fixture(scope="module")
def compose_bin() -> str:
    script = ROOT / "scripts" / "install-compose.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    if done.returncode == 3:
        pytest.skip(f"docker-compose not installed and apt is unavailable: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    binary = shutil.which("docker-compose")
    assert binary is not None
    return binary


def compose_config(binary: str, path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "GATEKEEPER_"))}
    return subprocess.run([binary, "-f", str(path), "--project-directory", str(ROOT), "config"], capture_output=True,
                          text=True, timeout=120, env={**clean, **env})  # fmt: skip


@pytest.fixture(scope="module")
def config(compose_bin: str) -> dict:
    done = compose_config(compose_bin, COMPOSE, POSTGRES_PASSWORD="s3cret")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)

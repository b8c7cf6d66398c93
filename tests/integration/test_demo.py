"""``make run`` is what a new user meets first: ``gatekeeper demo`` on the embedded SQLite and the filesystem
broker, in an empty folder, must register the committed scorer and segmenter, push the sample and route it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_demo_pushes_the_sample_and_routes_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.update({"GATEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path / 'gk.db'}", "GATEKEEPER_BROKER_URL": "filesystem://",
                "GATEKEEPER_STORAGE_DIR": str(tmp_path / "storage"), "GATEKEEPER_MODELS_DIR": str(tmp_path / "models"),
                "GATEKEEPER_SERIES_STABLE_AGE_S": "2", "COLUMNS": "200"})  # fmt: skip
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "gatekeeper"), "demo", "--timeout-s", "240"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=420)  # fmt: skip
    text = out.stdout + out.stderr  # the demo reports on stderr (rich), progress bars go to stdout
    assert out.returncode == 0, text[-3000:]
    assert "STOW-RS of 20 instances: HTTP 200" in text
    assert "scorer v1 registered and promoted" in text  # the committed default scorer, not a demo one
    assert "segmenter v1 registered and promoted" in text  # the committed segmenter: nothing trained here
    assert "training a demo segmenter" not in text
    assert "decision: " in text and "threshold" in text

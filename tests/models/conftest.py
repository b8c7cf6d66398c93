"""Fixtures for model tests: tiny CPU networks, real-data location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _single_thread_and_seed() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real CT directory (env GATEKEEPER_DATA_DIR, default ../shared/data); skips when absent."""
    path = Path(os.environ.get("GATEKEEPER_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not (path / "ct").is_dir():
        pytest.skip(f"real CT data not found at {path} (set GATEKEEPER_DATA_DIR to run these tests)")
    return path

"""Fixtures: a fresh PostgreSQL database, Redis, and the API + a Celery worker as real processes.

The machinery (Stack, StackFactory, private servers) lives in testkit/servers.py, shared with bench/chaos.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.servers import PG_ADMIN, ROOT, Stack, StackFactory, make_token

__all__ = ["DATA_DIR", "PG_ADMIN", "ROOT", "Stack", "make_token"]
DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA_DIR", ROOT.parent / "shared" / "data"))


# Whole modules run on one pytest-xdist worker (``--dist loadscope`` in the Makefile), so a module's stack
# starts once; the modules that start stacks, browsers and trainings are handed out first and the quick
# ones fill in behind them, so that no long module starts last and runs alone.
HEAVY_FIRST = ("integration", "resilience", "deploy", "workers", "models", "api", "fast", "unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        parts = Path(str(item.path)).relative_to(ROOT / "tests").parts
        return HEAVY_FIRST.index(parts[0]) if len(parts) > 1 and parts[0] in HEAVY_FIRST else len(HEAVY_FIRST)

    items.sort(key=rank)  # stable: the order inside each module is kept


@pytest.fixture(scope="session")
def stack_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    factory = StackFactory(tmp_path_factory.mktemp)
    yield factory
    crashes = factory.close()
    # An unhandled exception in the API is a bug even when the client saw a status code.
    assert not crashes, f"unhandled exceptions in the API, see {crashes}"


@pytest.fixture(autouse=True, scope="module")
def _module_stacks_stop_at_module_end(stack_factory: StackFactory) -> Iterator[None]:
    """A module's own stacks (module fixtures, or made inside a test) stop when the module ends."""
    count = len(stack_factory.made)
    yield
    stack_factory.release_since(count)


@pytest.fixture(scope="session")
def stack(stack_factory: StackFactory) -> Stack:
    """The shared service for tests that use fresh UIDs and so do not disturb each other."""
    return stack_factory.pin(stack_factory())


@pytest.fixture(scope="session")
def sqlite_stack(stack_factory: StackFactory) -> Stack:
    """The same service on the embedded default (SQLite), what `make run` gives a new user."""
    return stack_factory.pin(stack_factory(database="sqlite"))


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    """Run a test on both databases: PostgreSQL and the embedded SQLite default."""
    return request.getfixturevalue("stack" if request.param == "postgresql" else "sqlite_stack")


@pytest.fixture
def pacs(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client("pacs") as c:
        yield c


def real_series_dir(case: str) -> Path:
    folder = DATA_DIR / "ct" / case / "ct-dicom"
    if not folder.is_dir():
        pytest.skip(f"real CT data not found at {folder} (set GATEKEEPER_DATA_DIR to ../shared/data)")
    return folder

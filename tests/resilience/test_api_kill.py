"""API kill (short version of bench/chaos/api_kill.py): SIGKILL the API while PACS clients push and retry.

Every acknowledged instance must be on disk with its sha256 and in the database, no row may lack its
file, and files left by a kill (in tmp/, or renamed before the commit) are swept.
"""

from __future__ import annotations

import pytest

from bench.chaos import api_kill

pytestmark = pytest.mark.integration


def test_acknowledged_instances_survive_api_kills(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    figures = api_kill.run(stack_factory, tmp_path, **api_kill.SHORT)
    print(figures)

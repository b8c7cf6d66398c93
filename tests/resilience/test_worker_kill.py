"""Worker kill (short version of bench/chaos/worker_kill.py): SIGKILL the worker's child during scoring runs.

Every series must end AUTO, MANUAL or FAILED; none lost or stuck; one decision per (series, revision,
scorer version); no series scored more than the cap (3 runs; the claim counter may read 4, the give-up).
"""

from __future__ import annotations

import pytest

from bench.chaos import worker_kill

pytestmark = pytest.mark.integration


def test_series_finish_despite_worker_kills(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    figures = worker_kill.run(stack_factory, tmp_path, **worker_kill.SHORT)
    print(figures)

"""Duplicate storm (short version of bench/chaos/duplicate_storm.py): concurrent clients send the same
study several times each to two API processes; exactly one row and one file per instance."""

from __future__ import annotations

import pytest

from bench.chaos import duplicate_storm

pytestmark = pytest.mark.integration


def test_duplicate_storm_across_two_api_processes(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    figures = duplicate_storm.run(stack_factory, tmp_path, **duplicate_storm.SHORT)
    print(figures)

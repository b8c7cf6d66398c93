"""Broker and database restarts (short versions of bench/chaos/broker_restart.py and db_restart.py), on
private servers these tests may kill."""

from __future__ import annotations

import pytest

from bench.chaos import broker_restart, db_restart

pytestmark = pytest.mark.integration


def test_broker_restarts_lose_nothing(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Redis with an append-only file, killed and restarted 5 times during a push: 4 restarts keep its
    data, one starts it empty. Ingest answers 200 throughout; every series is routed within two
    reconciler periods of the broker's return."""
    figures = broker_restart.run(stack_factory, tmp_path, **broker_restart.SHORT)
    assert figures["restarts_flushed"] >= 1 and len(figures["broker_keys_kept"]) >= 1  # both kinds covered
    print(figures)


def test_database_restart_gives_503_then_recovers(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    figures = db_restart.run(stack_factory, tmp_path, **db_restart.SHORT)
    print(figures)

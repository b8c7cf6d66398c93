"""The fast layer: services and queries in process, on a real PostgreSQL database, each test inside a
transaction that is rolled back afterwards (as Netflix Dispatch's tests do), so tests never see each
other's rows and need no clean-up. No API or worker processes: `make test-fast` runs in seconds.

Code that opens its own sessions (``session_scope()``) gets sessions bound to the same connection in
``create_savepoint`` mode: its commits release a savepoint, and the outer rollback still undoes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, create_engine
from sqlalchemy.orm import Session, sessionmaker

from app import processes
from app.core import db as core_db
from app.db.tables import Series, Study
from testkit.servers import PG_ADMIN


@pytest.fixture(scope="session")
def pg_connection() -> Iterator[Connection]:
    url = processes.create_database(PG_ADMIN, "gk_fast")
    try:
        processes.migrate(url)
        engine = create_engine(url)
        with engine.connect() as connection:
            yield connection
        engine.dispose()
    finally:
        processes.drop_database(PG_ADMIN, url)


@pytest.fixture
def db(pg_connection: Connection, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    """A session inside a transaction rolled back after the test; ``session_scope()`` joins it."""
    outer = pg_connection.begin()
    factory = sessionmaker(bind=pg_connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    monkeypatch.setattr(core_db, "_session_factory", lambda: factory)
    session = factory()
    try:
        yield session
    finally:
        session.close()
        outer.rollback()


_uid = iter(range(1, 10**9))


def add_series(db: Session, status: str = "queued", **values: object) -> Series:
    """A study and one series in ``status`` (fresh UIDs)."""
    n = next(_uid)
    study = Study(study_uid=f"1.2.826.0.1.{n}", patient_id=f"P{n}", attributes={})
    db.add(study)
    db.flush()
    series = Series(study_id=study.id, series_uid=f"1.2.826.0.2.{n}", modality="CT", status=status,
                    last_instance_at=datetime.now(UTC), **values)  # fmt: skip
    db.add(series)
    db.flush()
    return series

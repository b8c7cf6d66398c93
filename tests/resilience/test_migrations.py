"""Migrations: upgrade from the first revision with data in the tables, downgrade, upgrade, no drift."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from app.processes import create_database, drop_database
from tests.conftest import PG_ADMIN, ROOT

pytestmark = pytest.mark.integration


def alembic(url: str, *args: str) -> str:
    cmd = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args]
    env = {**os.environ, "GATEKEEPER_DATABASE_URL": url}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout + out.stderr


@pytest.fixture
def empty_db():  # type: ignore[no-untyped-def]
    url = create_database(PG_ADMIN, "gk_mig")
    yield url
    drop_database(PG_ADMIN, url)


def _seed_first_revision(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as c:
        c.execute(text("INSERT INTO studies (id, study_uid, attributes, created_at) VALUES (1, '1.2.3', '{}', now())"))
        c.execute(text("INSERT INTO series (id, study_id, series_uid, attributes, status, revision, attempts, "
                       "instance_count, last_instance_at, updated_at) VALUES "
                       "(1, 1, '1.2.3.4', '{}', 'scored', 0, 1, 1, now(), now()), "
                       "(2, 1, '1.2.3.5', '{}', 'receiving', 0, 0, 1, now(), now())"))  # fmt: skip
        c.execute(text("INSERT INTO instances (series_id, sop_instance_uid, sop_class_uid, transfer_syntax_uid, "
                       "sha256, size_bytes, storage_path, received_at) VALUES "
                       "(1, '1.2.3.4.1', '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1', 'ab', 10, 'objects/x', "
                       "now())"))  # fmt: skip
        c.execute(text("INSERT INTO outbox (topic, series_id, revision, created_at, publish_count) "
                       "VALUES ('score', 1, 0, now(), 1)"))  # fmt: skip
        c.execute(text("INSERT INTO audit_events (at, actor, action, entity_type, detail) "
                       "VALUES (now(), 't', 'instances.stored', 'series', '{}')"))  # fmt: skip


def test_upgrade_downgrade_upgrade_keeps_data(empty_db: str) -> None:
    alembic(empty_db, "upgrade", "0001")
    engine = create_engine(empty_db)
    _seed_first_revision(engine)
    alembic(empty_db, "upgrade", "head")
    with engine.connect() as c:
        assert c.execute(text("SELECT status FROM series WHERE id=1")).scalar() == "queued"  # re-scored by routing
        assert c.execute(text("SELECT count(*) FROM instances")).scalar() == 1
        assert c.execute(text("SELECT count(*) FROM outbox")).scalar() == 1
    alembic(empty_db, "downgrade", "0001")
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM instances")).scalar() == 1
        assert c.execute(text("SELECT count(*) FROM audit_events")).scalar() == 1
    alembic(empty_db, "upgrade", "head")
    assert "No new upgrade operations detected" in alembic(empty_db, "check")
    with engine.connect() as c:
        assert c.execute(text("SELECT series_uid FROM series WHERE id=2")).scalar() == "1.2.3.5"
    engine.dispose()


def test_audit_table_is_append_only(empty_db: str) -> None:
    alembic(empty_db, "upgrade", "head")
    engine = create_engine(empty_db)
    with engine.begin() as c:
        c.execute(text("INSERT INTO audit_events (at, actor, action, entity_type, detail) "
                       "VALUES (now(), 't', 'x', 'y', '{}')"))  # fmt: skip
    for sql in ("UPDATE audit_events SET actor='z'", "DELETE FROM audit_events"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as c:
            c.execute(text(sql))
    engine.dispose()

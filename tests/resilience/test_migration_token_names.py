"""Migration 0005 on a database whose tokens all share the name ``default`` (the old default): the oldest keeps
it, the others get their id appended, and from then on two unrevoked tokens cannot share a name."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from app.processes import create_database, drop_database
from tests.conftest import PG_ADMIN
from tests.resilience.test_migrations import alembic

pytestmark = pytest.mark.integration
INSERT = ("INSERT INTO api_tokens (name, role, token_hash, created_at, revoked_at) VALUES "
          "(:n, 'radiologist', :h, CURRENT_TIMESTAMP, {revoked})")  # fmt: skip


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_duplicate_names_are_made_unique(database: str, tmp_path: Path) -> None:
    url = create_database(PG_ADMIN, "gk_mig") if database == "postgresql" else f"sqlite:///{tmp_path}/m.sqlite"
    try:
        alembic(url, "upgrade", "0004_case_claim_version")
        engine = create_engine(url)
        with engine.begin() as c:
            for i in range(3):
                c.execute(text(INSERT.format(revoked="NULL")), {"n": "default", "h": f"{i:064d}"})
            c.execute(text(INSERT.format(revoked="CURRENT_TIMESTAMP")), {"n": "default", "h": f"{9:064d}"})
        alembic(url, "upgrade", "head")
        with engine.begin() as c:
            rows = c.execute(text("SELECT id, name, revoked_at IS NULL FROM api_tokens ORDER BY id")).all()
        first = rows[0][0]
        assert [(n, bool(a)) for _, n, a in rows] == [("default", True), (f"default-{first + 1}", True),
                                                       (f"default-{first + 2}", True), ("default", False)]  # fmt: skip
        with pytest.raises(IntegrityError), engine.begin() as c:
            c.execute(text(INSERT.format(revoked="NULL")), {"n": f"default-{first + 1}", "h": "f" * 64})
        with engine.begin() as c:  # a revoked token may share a name
            c.execute(text(INSERT.format(revoked="CURRENT_TIMESTAMP")), {"n": "default", "h": "e" * 64})
        engine.dispose()
        alembic(url, "downgrade", "0004_case_claim_version")
    finally:
        if database == "postgresql":
            drop_database(PG_ADMIN, url)

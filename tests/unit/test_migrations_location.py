"""The migrations live in the package (app/migrations), where an installed `gatekeeper db upgrade` finds them.
A revision written to the old top-level migrations/versions would be skipped silently by Alembic: refuse it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_revision_outside_the_package() -> None:
    stray = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "migrations").rglob("*.py"))
    assert not stray, f"move these revisions to app/migrations/versions (Alembic reads only that folder): {stray}"
    assert (ROOT / "app" / "migrations" / "env.py").is_file()
    assert sorted((ROOT / "app" / "migrations" / "versions").glob("0001_*.py"))

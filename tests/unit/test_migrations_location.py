"""The migrations live in the repository's migrations/ (the fixed layout) and ship in the wheel as the
top-level package ``migrations``; the CLI finds them by import, so an installed ``gatekeeper db upgrade``
works anywhere (tests/deploy/test_wheel_install.py installs the wheel and migrates)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from app.cli.main import alembic_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_migrates_from_the_migrations_package() -> None:
    location = Path(alembic_config().get_main_option("script_location") or "")
    assert location.resolve() == (ROOT / "migrations").resolve()
    assert sorted((location / "versions").glob("0001_*.py"))


def test_the_wheel_carries_the_migrations() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert "migrations*" in setuptools["packages"]["find"]["include"]
    assert "versions/*.py" in setuptools["package-data"]["migrations"]
    assert not (ROOT / "app" / "migrations").exists(), "revisions belong in migrations/versions"

"""The built wheel, installed into a fresh virtual environment away from the checkout, migrates an empty
SQLite database and a fresh PostgreSQL database with `gatekeeper db upgrade`, serves, and answers /healthz
over real HTTP (issue #15: the image died on `Path doesn't exist: .../site-packages/migrations`).

Nothing is downloaded: the wheel is built without build isolation (setuptools from this environment) and
installed with --no-deps --no-index; its dependencies (torch included) come from this environment's
site-packages through a .pth file, so pip never resolves another torch.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from app.processes import create_database, drop_database, free_port
from tests.conftest import PG_ADMIN, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# what the Dockerfile's wheel stage copies
SOURCES = ("pyproject.toml", "README.md", "app", "workers", "models", "migrations")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:4]} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the fresh venv, a clean environment for it): no PYTHONPATH, no GATEKEEPER_* from the test run."""
    where = tmp_path_factory.mktemp("wheel-install")
    assert not where.resolve().is_relative_to(ROOT.resolve())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("GATEKEEPER_")}
    env["PIP_NO_INDEX"] = "1"
    # From a copy of what the Dockerfile copies: a build in the checkout would reuse a stale build/lib.
    src = where / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=IGNORE)
        else:
            shutil.copy2(ROOT / name, src / name)
    wheels = where / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels),
         str(src)], cwd=where, env=env)  # fmt: skip
    (wheel,) = wheels.glob("gatekeeper-*.whl")
    venv = where / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=where, env=env)
    python = str(venv / "bin" / "python")
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], where, env).strip())
    (purelib / "gatekeeper-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=where, env=env)
    # the package that runs is the installed copy, not the checkout (no editable finder, no PYTHONPATH)
    where_app = run([python, "-c", "import app; print(app.__file__)"], cwd=where, env=env)
    assert Path(where_app.strip()).is_relative_to(purelib), where_app
    return venv, env


def head_revision() -> str:
    return ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head() or ""


def serve_and_check(venv: Path, env: dict[str, str], cwd: Path) -> None:
    port = free_port()
    log = (cwd / "serve.log").open("wb")
    proc = subprocess.Popen([str(venv / "bin" / "gatekeeper"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}: {(cwd / 'serve.log').read_text()[-2000:]}"
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the installed API never answered"
                time.sleep(0.2)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        # the database is reachable (not ready only because no scorer is promoted), and /docs' assets are packaged
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
        assert ready.get("database", "ok") == "ok", ready
        assert httpx.get(f"http://127.0.0.1:{port}/docs/assets/swagger-ui-bundle.js", timeout=10).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_installed_wheel_migrates_and_serves(installed, database: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    venv, base_env = installed
    url = f"sqlite:///{tmp_path}/empty.sqlite" if database == "sqlite" else create_database(PG_ADMIN, "gk_wheel")
    try:
        env = {**base_env, "GATEKEEPER_DATABASE_URL": url, "GATEKEEPER_STORAGE_DIR": str(tmp_path / "storage"),
               "GATEKEEPER_MODELS_DIR": str(tmp_path / "models"), "GATEKEEPER_BROKER_URL": "filesystem://"}  # fmt: skip
        out = run([str(venv / "bin" / "gatekeeper"), "db", "upgrade"], cwd=tmp_path, env=env)
        assert "database at revision head" in out
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
                assert conn.execute(text("SELECT count(*) FROM training_jobs")).scalar() == 0
        finally:
            engine.dispose()
        serve_and_check(venv, env, tmp_path)
    finally:
        if database == "postgresql":
            drop_database(PG_ADMIN, url)

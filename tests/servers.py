"""Private Redis and PostgreSQL servers that a test may stop, flush and restart freely."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from app.processes import free_port

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


class PrivateRedis:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "private redis did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


class PrivatePostgres:
    """A throw-away cluster (initdb) on its own port, trust auth."""

    def __init__(self) -> None:
        assert PG_BIN is not None, "PostgreSQL binaries not found"
        self.port = free_port()
        # its own folder under /tmp: the postgres user must reach it (pytest's tmp dirs are private to root)
        folder = Path(tempfile.mkdtemp(prefix="gk-pg-"))
        os.chmod(folder, 0o777)
        self.folder = folder
        self.data = folder / "pgdata"
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"], check=True,
                       capture_output=True, user="postgres" if _is_root() else None)  # fmt: skip
        self.log = folder / "pg.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args], check=True,
                       capture_output=True, user="postgres" if _is_root() else None)  # fmt: skip

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1", "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _is_root() -> bool:
    return os.geteuid() == 0

"""The DICOM receiver as a real process (``gatekeeper dimse``) beside a stack, and dcmtk's senders.

Shared by tests/integration/test_dimse*.py and bench/bench_dimse.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from app.processes import free_port, stop_group

ROOT = Path(__file__).resolve().parent.parent
AE_TITLE = "GATEKEEPER"


def dcmtk_available() -> bool:
    return shutil.which("storescu") is not None and shutil.which("echoscu") is not None


@dataclass
class Receiver:
    port: int
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop_group(self.proc)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_receiver(env: dict[str, str], log_dir: Path, allowed: str, **overrides: str) -> Receiver:
    """``gatekeeper dimse`` on a free port with the stack's database and storage; waits until it listens."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"dimse-{port}.log"
    full = {**os.environ, **env, "GATEKEEPER_DIMSE_PORT": str(port), "GATEKEEPER_DIMSE_HOST": "127.0.0.1",
            "GATEKEEPER_DIMSE_ALLOWED_PEERS": allowed, **overrides}  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gatekeeper"), "dimse"], cwd=ROOT, env=full,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gatekeeper dimse exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Receiver(port, proc, log)
        except OSError:
            if time.monotonic() > deadline:
                stop_group(proc)
                raise TimeoutError("gatekeeper dimse did not listen within 60 s") from None
            time.sleep(0.1)


def storescu(port: int, files: list[Path], *, aet: str = "STORESCU", aec: str = AE_TITLE,
             timeout_s: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """dcmtk's storescu: every file over one association (verbose, so each response status is printed)."""
    args = ["storescu", "-v", "-aet", aet, "-aec", aec, "-to", "30", "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)


def echoscu(port: int, *, aet: str = "ECHOSCU", aec: str = AE_TITLE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-v", "-aet", aet, "-aec", aec, "-to", "30", "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def write_files(folder: Path, blobs: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, blob in enumerate(blobs):
        path = folder / f"{i:04d}.dcm"
        path.write_bytes(blob)
        paths.append(path)
    return paths


@dataclass
class Orthanc:
    """A real Orthanc on free loopback ports, with a generated configuration in its own folder."""

    url: str
    dicom_port: int
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop_group(self.proc)


def start_orthanc(root: Path, *, modalities: dict[str, dict[str, object]], allow_store_from_anyone: bool) -> Orthanc:
    """Orthanc 1.10 (Debian ``orthanc``; ``scripts/install-orthanc.sh``), AE title ORTHANC, no plugins."""
    import httpx

    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "gk-dimse", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "storage"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC", "Plugins": [],
        # Orthanc 1.10 cannot bind to loopback only: refuse remote HTTP clients; DICOM as asked.
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": allow_store_from_anyone, "DicomAlwaysAllowStore": allow_store_from_anyone,
        "SyncStorageArea": True, "SaveJobs": False, "JobsHistorySize": 100, "DicomScuTimeout": 30,
        "DicomModalities": modalities,
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = root / "orthanc.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([binary, str(root / "orthanc.json")], cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/system", timeout=1).status_code == 200:
                return Orthanc(url, dicom_port, proc, log)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_group(proc)
            raise TimeoutError("Orthanc did not answer within 30 s")
        time.sleep(0.1)


def orthanc_available() -> bool:
    return shutil.which("Orthanc") is not None or Path("/usr/sbin/Orthanc").exists()

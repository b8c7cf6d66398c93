"""A private Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb``) on free loopback ports, with Basic auth.

A test may start it late and stop it early: its ports are chosen at construction, so the service can be
pointed at it before it listens (a PACS that is down at first).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from app.processes import free_port, stop_group

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",  # Debian: symlink to the versioned library
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed and cannot be (the test skips)."""


def orthanc_binary() -> tuple[str, str]:
    """(Orthanc, its DICOMweb plugin); installed by scripts/install-orthanc.sh when missing."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install-orthanc.sh")], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    if done.returncode == 3:
        raise OrthancUnavailable(f"Orthanc not installed and apt is unavailable: {done.stderr.strip()[-300:]}")
    if done.returncode != 0:
        raise RuntimeError(f"install-orthanc.sh failed ({done.returncode}): {(done.stdout + done.stderr)[-1000:]}")
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    plugin = next((p for p in PLUGIN_CANDIDATES if Path(p).exists()), None)
    if plugin is None:
        raise OrthancUnavailable(f"DICOMweb plugin not found in {PLUGIN_CANDIDATES}")
    return binary, plugin


class PrivateOrthanc:
    def __init__(self, folder: Path, users: dict[str, str], modalities: dict[str, list] | None = None) -> None:
        """``modalities``: Orthanc's DicomModalities (name: [AE title, host, port]), the only AEs it accepts
        C-STORE from on its DICOM port (DicomAlwaysAllowStore is off)."""
        self.binary, self.plugin = orthanc_binary()
        self.folder, self.users, self.modalities = folder, users, modalities or {}
        self.http_port, self.dicom_port = free_port(), free_port()
        self.log = folder / "orthanc.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict:
        return {
            "Name": "gk-destination",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "Plugins": [self.plugin],
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "GKDEST",
            # Orthanc 1.10 cannot bind to loopback only; loopback clients are "local", and every client,
            # local or not, must authenticate (what a hospital's Orthanc with RegisteredUsers does).
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": True,
            "RegisteredUsers": self.users,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomModalities": self.modalities,
            "SyncStorageArea": True,
            "SaveJobs": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }

    def start(self, timeout_s: float = 30) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "config.json").write_text(json.dumps(self.config(), indent=2))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([self.binary, str(self.folder / "config.json")], cwd=self.folder,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        user, password = next(iter(self.users.items()))
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/system", auth=(user, password), timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Orthanc did not answer within {timeout_s} s; see {self.log}")
            time.sleep(0.1)
        plugins = httpx.get(f"{self.url}/plugins", auth=(user, password), timeout=5).json()
        if "dicom-web" not in plugins:
            raise RuntimeError(f"DICOMweb plugin not loaded: {plugins}; see {self.log}")

    def client(self) -> httpx.Client:
        user, password = next(iter(self.users.items()))
        return httpx.Client(base_url=self.url, auth=(user, password), timeout=30)

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder / "storage", ignore_errors=True)

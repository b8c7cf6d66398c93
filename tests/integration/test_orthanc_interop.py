"""Interop with a real PACS: Orthanc pushes a real CT series to the service, three times.

Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``, installed by
``scripts/install-orthanc.sh`` when missing) runs as a plain child process on
free loopback ports with a generated configuration. It holds the 129-slice
``ircadb-01`` series and sends it to the service:

(a) through its DICOMweb STOW-RS client (``POST /dicom-web/servers/gatekeeper/stow``),
(b) through Orthanc peer push (``POST /peers/gatekeeper/store``): all duplicates,
(c) through peer push again with gzip bodies (``"Compress": true``): duplicates again.

Every Orthanc job must succeed by Orthanc's own account, and the service must
then hold every instance exactly once (QIDO, database rows, stored files), and
score and route the series without re-opening it. The real data never enters the
repository: Orthanc and the service store their copies in temporary folders whose
storage is deleted at teardown (the logs stay, for diagnosis).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.processes import Service, create_database, drop_database, free_port, migrate, stop_group

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA_DIR", ROOT.parent / "shared" / "data"))
CASE = "ircadb-01"
N_INSTANCES = 129
PG_ADMIN = os.environ.get("GATEKEEPER_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = "redis://127.0.0.1:6379/5"
FINISHED = {"auto", "manual", "failed"}  # app.db.states.FINISHED
ROUTED = {"auto", "manual"}  # scored and routed; "failed" means the volume could not be scored
PEER = "gatekeeper"  # the name of the service in Orthanc's DicomWeb.Servers and OrthancPeers
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",  # Debian: symlink to the versioned library
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


@pytest.fixture(scope="module")
def series_files() -> list[Path]:
    """The real series' files; skips (before anything is started) when the data is absent."""
    for folder in (DATA_DIR / "ct" / CASE / "ct-dicom", DATA_DIR / CASE / "ct-dicom"):
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
            assert len(files) == N_INSTANCES, f"{CASE}: {len(files)} files, expected {N_INSTANCES}"
            return files
    pytest.skip(f"real CT data {CASE} not found under {DATA_DIR} (set GATEKEEPER_DATA_DIR to ../shared/data)")


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"({path}: {exc})"


# --------------------------------------------------------------------------- Orthanc install


@pytest.fixture(scope="module")
def orthanc_binary() -> tuple[str, str]:
    """(path of the Orthanc binary, path of the DICOMweb plugin); installs them if missing."""
    script = ROOT / "scripts" / "install-orthanc.sh"
    try:
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"could not run {script.name}: {exc}")
    if done.returncode == 3:
        pytest.skip(f"Orthanc not installed and apt is unavailable: {done.stderr.strip()[-300:]}")
    if done.returncode != 0:
        pytest.fail(f"{script.name} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    plugin = next((p for p in PLUGIN_CANDIDATES if Path(p).exists()), None)
    if plugin is None:
        pytest.fail(f"DICOMweb plugin not found in {PLUGIN_CANDIDATES}")
    return binary, plugin


# --------------------------------------------------------------------------- the service


@dataclass
class Gatekeeper:
    service: Service
    database_url: str
    storage: Path
    token: str


@pytest.fixture(scope="module")
def gatekeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gatekeeper]:
    root = tmp_path_factory.mktemp("gatekeeper")
    try:
        url = create_database(PG_ADMIN, "gk_orthanc")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL at {PG_ADMIN.split('@')[-1]} unavailable: {type(exc).__name__}")
    service: Service | None = None
    try:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        migrate(url)
        env = {
            "GATEKEEPER_DATABASE_URL": url,
            "GATEKEEPER_BROKER_URL": REDIS_URL,
            "GATEKEEPER_STORAGE_DIR": str(root / "storage"),
            "GATEKEEPER_SERIES_STABLE_AGE_S": "2",
            "GATEKEEPER_DISPATCH_INTERVAL_S": "0.2",
            "GATEKEEPER_LOG_LEVEL": "INFO",
        }
        cmd = [
            str(ROOT / ".venv" / "bin" / "gatekeeper"),
            "token",
            "create",
            "--role",
            "pacs",
            "--name",
            "orthanc",
        ]
        made = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=60)
        token = made.stdout.strip().splitlines()[-1]
        service = Service(env=env, log_dir=root / "logs")
        service.start_api()
        service.start_worker()
        yield Gatekeeper(service, url, root / "storage", token)
    finally:
        if service is not None:
            service.stop()
        shutil.rmtree(root / "storage", ignore_errors=True)  # copies of the real data; the logs stay
        drop_database(PG_ADMIN, url)


# --------------------------------------------------------------------------- Orthanc


@dataclass
class Orthanc:
    url: str
    log: Path
    proc: subprocess.Popen


def orthanc_config(
    *, storage: Path, http_port: int, dicom_port: int, plugin: str, service_url: str, token: str
) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    return {
        "Name": "gk-interop",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [plugin],
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "GKINTEROP",
        # Orthanc 1.10 cannot bind to loopback only: refuse every remote HTTP client and
        # every DICOM association (no modalities declared, nothing allowed by default).
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckCalledAet": True,
        "SyncStorageArea": True,
        "SaveJobs": False,
        "JobsHistorySize": 100,
        "HttpTimeout": 60,
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "Servers": {PEER: {"Url": f"{service_url}/dicomweb/", "HttpHeaders": headers}},
        },
        "OrthancPeers": {PEER: {"Url": f"{service_url}/", "HttpHeaders": headers}},
    }


@pytest.fixture(scope="module")
def orthanc(orthanc_binary: tuple[str, str], gatekeeper: Gatekeeper, tmp_path_factory) -> Iterator[Orthanc]:  # type: ignore[no-untyped-def]
    binary, plugin = orthanc_binary
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = orthanc_config(
        storage=root / "storage", http_port=http_port, dicom_port=dicom_port, plugin=plugin,
        service_url=gatekeeper.service.url, token=gatekeeper.token,
    )  # fmt: skip
    (root / "config.json").write_text(json.dumps(config, indent=2))
    log = root / "orthanc.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([binary, "--verbose", str(root / "config.json")], cwd=root, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Orthanc exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(f"{url}/system", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not answer within 30 s:\n{_tail(log)}")
            time.sleep(0.1)
        plugins = httpx.get(f"{url}/plugins", timeout=5).json()
        assert "dicom-web" in plugins, f"DICOMweb plugin not loaded: {plugins}\n{_tail(log)}"
        yield Orthanc(url, log, proc)
    finally:
        stop_group(proc)
        shutil.rmtree(root / "storage", ignore_errors=True)  # copies of the real data; the log stays


# --------------------------------------------------------------------------- helpers


def _run_job(o: httpx.Client, orthanc: Orthanc, gk: Gatekeeper, path: str, body: dict, timeout_s: float = 60) -> dict:
    """Start an Orthanc job and wait for its end; fail with both sides' logs unless it succeeded."""
    reply = o.post(path, json=body)
    assert reply.status_code == 200, f"POST {path}: {reply.status_code} {reply.text[:500]}"
    job_id = reply.json()["ID"]
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = o.get(f"/jobs/{job_id}").json()
        if job["State"] in ("Success", "Failure"):
            break
        time.sleep(0.2)
    if job.get("State") != "Success":
        keys = ("State", "ErrorCode", "ErrorDescription", "ErrorDetails", "Progress")
        summary = {k: job.get(k) for k in keys}
        # The job's content names the peer with its HttpHeaders: never print the token.
        summary["Content"] = {k: v for k, v in (job.get("Content") or {}).items() if k != "Peer"}
        pytest.fail(
            f"Orthanc job {path} did not succeed: {json.dumps(summary)[:1500]}\n"
            f"--- Orthanc log ---\n{_tail(orthanc.log)}\n"
            f"--- service api.log ---\n{_tail(gk.service.log_dir / 'api.log')}"
        )
    return job


def _counts(gk: Gatekeeper, series_uid: str) -> tuple[int, set[str], set[str]]:
    """(instance rows of the series, their sha256 digests, their storage paths)."""
    engine = create_engine(gk.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT i.sha256, i.storage_path FROM instances i JOIN series s ON s.id = i.series_id "
                     "WHERE s.series_uid = :uid"),
                {"uid": series_uid},
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    return len(rows), {r[0] for r in rows}, {r[1] for r in rows}


def _check_exactly_once(gk: Gatekeeper, study_uid: str, series_uid: str, label: str) -> None:
    with httpx.Client(base_url=gk.service.url, headers={"Authorization": f"Bearer {gk.token}"}, timeout=30) as c:
        r = c.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances")
    assert r.status_code == 200, f"{label}: QIDO {r.status_code} {r.text[:300]}"
    sops = [item["00080018"]["Value"][0] for item in r.json()]
    assert len(sops) == N_INSTANCES and len(set(sops)) == N_INSTANCES, f"{label}: QIDO lists {len(sops)} instances"

    n_rows, digests, paths = _counts(gk, series_uid)
    assert n_rows == N_INSTANCES, f"{label}: {n_rows} instance rows for the series"
    assert len(digests) == N_INSTANCES and len(paths) == N_INSTANCES, f"{label}: rows share content or files"
    # Exactly one stored file per instance: each row's file exists, and no other file holds the
    # same bytes (a file is named <sha256>-<random>.dcm). Other series (a derived SEG) may add files.
    files = [f.relative_to(gk.storage).as_posix() for f in (gk.storage / "objects").rglob("*.dcm")]
    missing = paths - set(files)
    assert not missing, f"{label}: {len(missing)} rows without their file"
    per_digest = Counter(Path(f).name.split("-", 1)[0] for f in files)
    extra = sum(per_digest[d] - 1 for d in digests)
    assert extra == 0, f"{label}: {extra} extra files hold copies of this series' instances"


# --------------------------------------------------------------------------- the test


def test_orthanc_pushes_real_series_by_stow_and_peer(
    series_files: list[Path], orthanc: Orthanc, gatekeeper: Gatekeeper
) -> None:
    files = series_files

    with httpx.Client(base_url=orthanc.url, timeout=60) as o:
        # Load the series into Orthanc, one REST upload per file.
        study_ids, series_ids = set(), set()
        for path in files:
            r = o.post("/instances", content=path.read_bytes(), headers={"Content-Type": "application/dicom"})
            assert r.status_code == 200, f"Orthanc refused a file: {r.status_code} {r.text[:200]}"
            study_ids.add(r.json()["ParentStudy"])
            series_ids.add(r.json()["ParentSeries"])
        assert len(study_ids) == 1 and len(series_ids) == 1
        study_id, series_id = study_ids.pop(), series_ids.pop()
        study_uid = o.get(f"/studies/{study_id}").json()["MainDicomTags"]["StudyInstanceUID"]
        series_uid = o.get(f"/series/{series_id}").json()["MainDicomTags"]["SeriesInstanceUID"]
        assert o.get(f"/studies/{study_id}/statistics").json()["CountInstances"] == N_INSTANCES

        # (a) Orthanc's DICOMweb STOW-RS client.
        job = _run_job(o, orthanc, gatekeeper, f"/dicom-web/servers/{PEER}/stow",
                       {"Resources": [study_id], "Synchronous": False})  # fmt: skip
        assert int(job["Content"]["InstancesCount"]) == N_INSTANCES
        _check_exactly_once(gatekeeper, study_uid, series_uid, "after STOW-RS")

        # (b) Orthanc peer push of the same study: every instance is a duplicate.
        job = _run_job(o, orthanc, gatekeeper, f"/peers/{PEER}/store",
                       {"Resources": [study_id], "Asynchronous": True})  # fmt: skip
        assert job["Content"]["InstancesCount"] == N_INSTANCES and job["Content"]["FailedInstancesCount"] == 0
        _check_exactly_once(gatekeeper, study_uid, series_uid, "after peer push")

        # (c) Peer push again with gzip bodies (Content-Encoding: gzip): duplicates again.
        job = _run_job(o, orthanc, gatekeeper, f"/peers/{PEER}/store",
                       {"Resources": [study_id], "Asynchronous": True, "Compress": True})  # fmt: skip
        assert job["Content"]["InstancesCount"] == N_INSTANCES and job["Content"]["FailedInstancesCount"] == 0
        _check_exactly_once(gatekeeper, study_uid, series_uid, "after gzip peer push")

    # The series completes (2 s without new instances); the worker scores and routes it. With no
    # promoted scorer the route is "manual" (nothing is auto-accepted), with one it may be "auto".
    headers = {"Authorization": f"Bearer {gatekeeper.token}"}
    deadline = time.monotonic() + 45
    state: dict = {}
    with httpx.Client(base_url=gatekeeper.service.url, headers=headers, timeout=10) as c:
        while time.monotonic() < deadline:
            state = c.get(f"/series/{series_uid}").json()
            if state.get("status") in FINISHED:
                break
            time.sleep(0.25)
    assert state.get("status") in ROUTED, (
        f"series status {state.get('status')!r}, last_error {state.get('last_error')!r}\n"
        f"--- worker.log ---\n{_tail(gatekeeper.service.log_dir / 'worker.log', 30)}"
    )
    assert state["instance_count"] == N_INSTANCES
    assert state["geometry"]["n_slices"] == N_INSTANCES
    assert state["revision"] == 0, "the duplicate pushes must not re-open the series"
    leftovers = list((gatekeeper.storage / "tmp").iterdir())
    assert not leftovers, f"{len(leftovers)} temporary files left behind"

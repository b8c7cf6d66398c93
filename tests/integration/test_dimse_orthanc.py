"""Real senders push the real 129-slice ircadb-01 series to the DIMSE receiver, on PostgreSQL and SQLite.

dcmtk's storescu first, then a real Orthanc (Debian ``orthanc``, its own config on free ports) holding the
same series, as a DICOM modality (``POST /modalities/gatekeeper/store``): every send succeeds by the
sender's own account, and the service holds every instance exactly once (rows, digests, files, QIDO). A
second modality entry with Orthanc calling as an AE not on the allow-list fails its job and stores nothing.
The real data is read from ../shared/data, never copied into the repository.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.dimse import Orthanc, Receiver, dcmtk_available, orthanc_available, start_orthanc, start_receiver, storescu
from testkit.servers import Stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.realdata,
    pytest.mark.skipif(not dcmtk_available(), reason="dcmtk not installed: apt-get install dcmtk"),
    pytest.mark.skipif(not orthanc_available(), reason="Orthanc not installed: scripts/install-orthanc.sh"),
]
N_INSTANCES = 129


@pytest.fixture(scope="module")
def series_files() -> list[Path]:
    from tests.conftest import real_series_dir

    files = sorted(p for p in real_series_dir("ircadb-01").iterdir() if p.is_file() and not p.name.startswith("."))
    assert len(files) == N_INSTANCES
    return files


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def fresh(request: pytest.FixtureRequest, stack_factory, series_files) -> Iterator[tuple[Stack, Receiver]]:  # type: ignore[no-untyped-def]
    """A stack of its own (no other test's copy of this series) and a receiver that lets Orthanc and storescu in."""
    stack = stack_factory(worker=False, database=request.param)
    receiver = start_receiver(stack.service.env, stack.service.log_dir, "ORTHANC@127.0.0.1,STORESCU@127.0.0.1")
    yield stack, receiver
    receiver.stop()


@pytest.fixture
def orthanc(fresh: tuple[Stack, Receiver], tmp_path: Path, series_files: list[Path]) -> Iterator[Orthanc]:
    _, receiver = fresh
    target = {"AET": "GATEKEEPER", "Host": "127.0.0.1", "Port": receiver.port}
    modalities = {"gatekeeper": target, "intruder": {**target, "LocalAet": "INTRUDER"}}
    server = start_orthanc(tmp_path / "orthanc", modalities=modalities, allow_store_from_anyone=False)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as o:
            for path in series_files:
                r = o.post("/instances", content=path.read_bytes(), headers={"Content-Type": "application/dicom"})
                assert r.status_code == 200, r.text[:200]
        yield server
    finally:
        server.stop()


def _job(o: httpx.Client, path: str, body: dict, timeout_s: float = 120) -> dict:
    reply = o.post(path, json=body)
    assert reply.status_code == 200, f"POST {path}: {reply.status_code} {reply.text[:300]}"
    job_id = reply.json()["ID"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = o.get(f"/jobs/{job_id}").json()
        if job["State"] in ("Success", "Failure"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"Orthanc job {path} still running after {timeout_s} s")


def _check_exactly_once(stack: Stack, series_uid: str, study_uid: str) -> None:
    rows = stack.rows("SELECT i.sha256, i.storage_path FROM instances i JOIN series s ON s.id = i.series_id "
                      "WHERE s.series_uid = :u", u=series_uid)  # fmt: skip
    assert len(rows) == N_INSTANCES and len({r[0] for r in rows}) == N_INSTANCES
    files = [f for f in (stack.storage / "objects").rglob("*.dcm")]
    assert {r[1] for r in rows} <= {f.relative_to(stack.storage).as_posix() for f in files}
    per_digest = Counter(f.name.split("-", 1)[0] for f in files)
    assert all(per_digest[r[0]] == 1 for r in rows), "a stored instance has more than one file"
    with stack.client() as c:
        listed = c.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances").json()
    assert len({item["00080018"]["Value"][0] for item in listed}) == len(listed) == N_INSTANCES
    assert not list((stack.storage / "tmp").glob("*.part")), "temporary files left behind"


def test_storescu_then_orthanc_push_the_real_series(
    fresh: tuple[Stack, Receiver], orthanc: Orthanc, series_files: list[Path]
) -> None:
    stack, receiver = fresh
    done = storescu(receiver.port, series_files)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("Received Store Response (Success)") == N_INSTANCES

    with httpx.Client(base_url=orthanc.url, timeout=60) as o:
        [study_id] = o.get("/studies").json()
        [series] = o.get(f"/studies/{study_id}/series").json()  # expanded: one object per series
        study_uid = o.get(f"/studies/{study_id}").json()["MainDicomTags"]["StudyInstanceUID"]
        series_uid = series["MainDicomTags"]["SeriesInstanceUID"]
        _check_exactly_once(stack, series_uid, study_uid)

        # Orthanc as a modality: every instance again (duplicates), by Orthanc's own C-STORE SCU.
        job = _job(o, "/modalities/gatekeeper/store", {"Resources": [study_id], "Synchronous": False})
        assert job["State"] == "Success", {k: job.get(k) for k in ("ErrorCode", "ErrorDescription", "ErrorDetails")}
        assert int(job["Content"]["InstancesCount"]) == N_INSTANCES
        assert int(job["Content"]["FailedInstancesCount"]) == 0
        _check_exactly_once(stack, series_uid, study_uid)

        # The same Orthanc calling as an AE title that is not on the allow-list: refused at association.
        job = _job(o, "/modalities/intruder/store", {"Resources": [study_id], "Synchronous": False})
        assert job["State"] == "Failure"
        _check_exactly_once(stack, series_uid, study_uid)
    assert "calling AE 'INTRUDER' from 127.0.0.1 is not on the allow-list" in receiver.log_text()

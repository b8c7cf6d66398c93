"""The DICOM C-STORE receiver as a real process (``gatekeeper dimse``), on PostgreSQL and SQLite.

Senders: dcmtk's echoscu and storescu (Debian ``dcmtk``) for real pushes, and pynetdicom as an SCU where
a test needs each response's exact status. The receiver shares the stack's database and storage, so the
API and its dispatcher see what it stored.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE

from app.client import stow
from testkit.dicom_factory import make_series
from testkit.dimse import Receiver, dcmtk_available, echoscu, start_receiver, storescu, write_files
from testkit.servers import Stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not dcmtk_available(), reason="dcmtk (storescu, echoscu) not installed: apt-get install dcmtk"),
]
ALLOWED = "STORESCU@127.0.0.1,ECHOSCU@127.0.0.0/8,PYSCU@*,FARAWAY@203.0.113.7"


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def dimse_stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, Receiver]]:
    stack: Stack = request.getfixturevalue("stack" if request.param == "postgresql" else "sqlite_stack")
    receiver = start_receiver(stack.service.env, stack.service.log_dir, ALLOWED)
    yield stack, receiver
    receiver.stop()


def _rows(stack: Stack, series_uid: str) -> list[tuple]:
    return stack.rows("SELECT i.sop_instance_uid, i.sha256, i.storage_path FROM instances i JOIN series s "
                      "ON s.id = i.series_id WHERE s.series_uid = :u", u=series_uid)  # fmt: skip


def _datasets(blobs: list[bytes]) -> list[Dataset]:
    return [pydicom.dcmread(io.BytesIO(b)) for b in blobs]


def _send(port: int, datasets: list[Dataset], aet: str = "PYSCU") -> list[tuple[int, str]]:
    """pynetdicom as the sender: (status, ErrorComment) of each C-STORE, one association."""
    ae = AE(ae_title=aet)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEKEEPER")
    assert assoc.is_established, "association refused"
    try:
        replies = [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()
    return [(int(r.Status), str(r.get("ErrorComment", ""))) for r in replies]


def test_echo_and_allow_list(dimse_stack: tuple[Stack, Receiver]) -> None:
    _, receiver = dimse_stack
    ok = echoscu(receiver.port, aet="ECHOSCU")
    assert ok.returncode == 0, ok.stderr
    for aet, reason in [
        ("INTRUDER", "Calling AE Title Not Recognized"),  # not on the list
        ("FARAWAY", "Calling AE Title Not Recognized"),
    ]:  # on it, but only from another host
        refused = echoscu(receiver.port, aet=aet)
        assert refused.returncode != 0 and "Association Rejected" in refused.stderr + refused.stdout
        assert reason in refused.stderr + refused.stdout
    wrong_called = echoscu(receiver.port, aet="ECHOSCU", aec="SOMEONE")
    assert wrong_called.returncode != 0 and "Called AE Title Not Recognized" in wrong_called.stderr


def test_refused_caller_stores_nothing(dimse_stack: tuple[Stack, Receiver], tmp_path: Path) -> None:
    stack, receiver = dimse_stack
    spec, blobs = make_series(3)
    done = storescu(receiver.port, write_files(tmp_path, blobs), aet="INTRUDER")
    assert done.returncode != 0 and "Association Rejected" in done.stderr + done.stdout
    assert _rows(stack, spec.series_uid) == []


def test_storescu_push_is_stored_once(dimse_stack: tuple[Stack, Receiver], tmp_path: Path) -> None:
    stack, receiver = dimse_stack
    spec, blobs = make_series(12)
    files = write_files(tmp_path, blobs)
    first = storescu(receiver.port, files)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stderr.count("Received Store Response (Success)") == 12, first.stderr[-2000:]
    rows = _rows(stack, spec.series_uid)
    assert len(rows) == 12 and len({r[1] for r in rows}) == 12
    assert all((stack.storage / r[2]).is_file() for r in rows)
    # The same series again, by dcmtk and then by another sender: duplicates, nothing new.
    again = storescu(receiver.port, files)
    assert again.returncode == 0 and again.stderr.count("Received Store Response (Success)") == 12
    assert [s for s, _ in _send(receiver.port, _datasets(blobs))] == [0x0000] * 12
    assert sorted(_rows(stack, spec.series_uid)) == sorted(rows)
    n_files = sum(1 for f in (stack.storage / "objects").rglob("*.dcm") if f.name.split("-")[0] in {r[1] for r in rows})
    assert n_files == 12
    # The service holds it as STOW would have: QIDO lists every instance once.
    with stack.client() as c:
        listed = c.get(f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/instances").json()
    assert len({item["00080018"]["Value"][0] for item in listed}) == len(listed) == 12


def test_each_success_is_durable_before_it_is_acknowledged(dimse_stack: tuple[Stack, Receiver]) -> None:
    stack, receiver = dimse_stack
    spec, blobs = make_series(5)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="GATEKEEPER")
    try:
        for n, ds in enumerate(_datasets(blobs), start=1):
            assert int(assoc.send_c_store(ds).Status) == 0x0000
            rows = _rows(stack, spec.series_uid)  # read at once, before the next C-STORE
            assert len(rows) == n and str(ds.SOPInstanceUID) in {r[0] for r in rows}
            assert all((stack.storage / r[2]).is_file() for r in rows)
    finally:
        assoc.release()


def test_the_same_instance_by_stow_and_by_c_store_is_one_duplicate(
    dimse_stack: tuple[Stack, Receiver], tmp_path: Path
) -> None:
    """The same data set sent by STOW-RS and by C-STORE, in either order, is stored once: the two files
    differ only in their file meta (the sender's own; the one the receiver rebuilds). It was a conflict
    (0x0111), and the second sender was told its instance clashed with itself."""
    stack, receiver = dimse_stack
    conflicts = "SELECT count(*) FROM audit_events WHERE action = 'instance.conflict'"
    before = stack.scalar(conflicts)
    spec, blobs = make_series(3)
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
    rows = _rows(stack, spec.series_uid)
    done = storescu(receiver.port, write_files(tmp_path / "after-stow", blobs))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("Received Store Response (Success)") == 3, done.stderr[-2000:]
    assert sorted(_rows(stack, spec.series_uid)) == sorted(rows)
    # C-STORE first, then STOW-RS: every part listed as stored (a duplicate), nothing new
    spec, blobs = make_series(2)
    assert storescu(receiver.port, write_files(tmp_path / "first", blobs)).returncode == 0
    rows = _rows(stack, spec.series_uid)
    with stack.client("pacs") as c:
        r = stow(c, blobs)
    assert r.status_code == 200 and len(r.json()["00081199"]["Value"]) == 2, r.text
    assert "00081198" not in r.json()
    assert sorted(_rows(stack, spec.series_uid)) == sorted(rows)
    assert stack.scalar(conflicts) == before
    # other pixel data under a stored UID is still a conflict, whichever protocol stored it
    changed = _datasets(blobs)[0]
    changed.PixelData = bytes(len(changed.PixelData))
    assert [s for s, _ in _send(receiver.port, [changed])] == [0x0111]
    assert stack.scalar(conflicts) == before + 1


def _nested(depth: int) -> Dataset:
    inner = Dataset()
    inner.CodeValue = "1"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    return inner


def test_failures_map_to_dimse_statuses(dimse_stack: tuple[Stack, Receiver]) -> None:
    stack, receiver = dimse_stack
    spec, blobs = make_series(1)
    good = _datasets(blobs)[0]
    conflict = _datasets(blobs)[0]
    conflict.PixelData = bytes(len(conflict.PixelData))  # the same SOP Instance UID, other bytes
    mr = _datasets(make_series(1)[1])[0]
    mr.SOPClassUID = MRImageStorage
    no_pixels = _datasets(make_series(1)[1])[0]
    del no_pixels.PixelData
    deep = _datasets(make_series(1)[1])[0]
    deep.ContentSequence = _nested(20).ContentSequence
    other_patient = _datasets(make_series(1, study_uid=spec.study_uid)[1])[0]
    other_patient.PatientID = "SOMEONE-ELSE"
    results = _send(receiver.port, [good, conflict, mr, no_pixels, deep, other_patient])
    assert [s for s, _ in results] == [0x0000, 0x0111, 0x0122, 0xA900, 0xC000, 0xA778], results
    assert "already stored with different content" in results[1][1]
    assert "PixelData" in results[3][1]
    assert len(_rows(stack, spec.series_uid)) == 1  # only the good one; the conflict changed nothing
    # Refusals carry no PHI: the comments name rules and attributes, never a value.
    assert not any("SOMEONE-ELSE" in c or "Synthetic" in c for _, c in results)


def _completion_trigger(stack: Stack, series_uid: str, timeout_s: float = 20) -> str:
    series_id = stack.scalar("SELECT id FROM series WHERE series_uid = :u", u=series_uid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        details = stack.rows("SELECT detail FROM audit_events WHERE action = 'series.completed' AND entity_id = :e",
                             e=str(series_id))  # fmt: skip
        if details:
            detail = details[0][0]
            return str((json.loads(detail) if isinstance(detail, str) else detail)["trigger"])
        time.sleep(0.1)
    raise AssertionError("series never completed")


def test_release_completes_series_when_configured(dimse_stack: tuple[Stack, Receiver], tmp_path: Path) -> None:
    stack, receiver = dimse_stack
    spec, blobs = make_series(4)
    assert storescu(receiver.port, write_files(tmp_path / "a", blobs)).returncode == 0
    assert _completion_trigger(stack, spec.series_uid) == "stable_age"  # the default: like STOW-RS
    env, logs = stack.service.env, stack.service.log_dir
    early = start_receiver(env, logs, ALLOWED, GATEKEEPER_DIMSE_COMPLETE_ON_RELEASE="true")
    try:
        spec, blobs = make_series(4)
        assert storescu(early.port, write_files(tmp_path / "b", blobs)).returncode == 0
        assert _completion_trigger(stack, spec.series_uid) == "dimse_release"
    finally:
        early.stop()


def test_receiver_log_has_no_phi(dimse_stack: tuple[Stack, Receiver], tmp_path: Path) -> None:
    _, receiver = dimse_stack
    spec, blobs = make_series(2, patient_name="Canary^Dimse", patient_id="CANARY-DIMSE-42")
    assert storescu(receiver.port, write_files(tmp_path, blobs)).returncode == 0
    text = receiver.log_text()
    assert "DIMSE association from dimse:STORESCU closed" in text
    for secret in ("Canary", "CANARY-DIMSE-42", spec.study_uid, spec.series_uid):
        assert secret not in text


def test_serve_starts_the_receiver_when_the_port_is_set(tmp_path: Path) -> None:
    import os
    import subprocess

    import httpx

    from app.processes import free_port, migrate, stop_group
    from testkit.servers import ROOT

    url = f"sqlite:///{tmp_path}/gk.sqlite"
    migrate(url)
    http_port, dimse_port = free_port(), free_port()
    env = {**os.environ, "GATEKEEPER_DATABASE_URL": url, "GATEKEEPER_STORAGE_DIR": str(tmp_path / "storage"),
           "GATEKEEPER_RUN_DISPATCHER": "false", "GATEKEEPER_DIMSE_PORT": str(dimse_port),
           "GATEKEEPER_DIMSE_ALLOWED_PEERS": "ECHOSCU@127.0.0.1"}  # fmt: skip
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gatekeeper"), "serve", "--port", str(http_port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "gatekeeper serve did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        done = echoscu(dimse_port)
        assert done.returncode == 0, done.stderr
    finally:
        stop_group(proc)

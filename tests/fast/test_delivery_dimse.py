"""Results back to the PACS by DICOM C-STORE (app/services/destination_dimse.py) through the same outbox as
STOW-RS (app/services/delivery.py), on a real PostgreSQL (rolled back), to real DICOM receivers: Orthanc's
DICOM port (down at first, then up; an AE it does not know is refused) and dcmtk's storescp (down, then up)."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.db.states import DeliveryStatus
from app.db.tables import Delivery
from app.dicom.seg import write_seg
from app.processes import free_port, stop_group
from app.services import delivery
from app.services.destination_dimse import read_status
from testkit.orthanc import OrthancUnavailable, PrivateOrthanc
from testkit.tiny_models import sample_visit
from tests.fast.conftest import add_series
from tests.fast.test_delivery import state

USER, PASSWORD = "gatekeeper", "a-long-random-password"


@pytest.fixture(scope="module")
def seg_blob() -> bytes:
    """A real SEG (a small cube) over the sample series, as the worker writes one."""
    _, _, blobs = sample_visit("GK-CSTORE")
    headers = sorted((pydicom.dcmread(io.BytesIO(b)) for b in blobs), key=lambda d: float(d.ImagePositionPatient[2]))
    mask = np.zeros((len(headers), int(headers[0].Rows), int(headers[0].Columns)), dtype=np.uint8)
    mask[2:5, 100:140, 100:140] = 1
    seg = write_seg(mask, headers, algorithm_name="gatekeeper-test", algorithm_version="1", model_sha256="")
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def settings_for(tmp_path: Path, port: int, ae_title: str = "GKDEST", **kw: object) -> Settings:
    return Settings(storage_dir=tmp_path, seg_destination_dimse_host="127.0.0.1", seg_destination_dimse_port=port,
                    seg_destination_ae_title=ae_title, delivery_backoff_s=2, delivery_backoff_max_s=5,
                    delivery_max_attempts=3, delivery_timeout_s=10, **kw)  # type: ignore[arg-type]  # fmt: skip


def seg_delivery(db: Session, settings: Settings, blob: bytes) -> Delivery:
    s = add_series(db, status="auto")
    (settings.storage_dir / "derived").mkdir(parents=True, exist_ok=True)
    (settings.storage_dir / "derived" / "seg.dcm").write_bytes(blob)
    sop = str(pydicom.dcmread(io.BytesIO(blob)).SOPInstanceUID)
    row = delivery.enqueue_auto_seg(db, settings, series_id=s.id, revision=0, seg_path="derived/seg.dcm",
                                    seg_sop_uid=sop)  # fmt: skip
    assert row is not None
    db.flush()
    return row


def due_now(db: Session, row: Delivery) -> None:
    db.execute(update(Delivery).where(Delivery.id == row.id).values(next_attempt_at=datetime.now(UTC)))


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[PrivateOrthanc]:
    """Not started: the test starts it (down at first). It knows one modality, GATEKEEPER."""
    try:
        pacs = PrivateOrthanc(tmp_path / "orthanc", {USER: PASSWORD}, {"gatekeeper": ["GATEKEEPER", "127.0.0.1", 104]})
    except OrthancUnavailable as exc:
        pytest.skip(str(exc))
    yield pacs
    pacs.remove()


def orthanc_holds(pacs: PrivateOrthanc, sop: str) -> dict:
    with pacs.client() as o:
        found = [r for r in o.post("/tools/lookup", content=sop).json() if r["Type"] == "Instance"]
        assert len(found) == 1, found
        return o.get(f"/instances/{found[0]['ID']}/tags", params={"simplify": ""}).json()


def test_c_store_to_orthanc_waits_while_it_is_down_then_arrives(
    db: Session, tmp_path: Path, orthanc: PrivateOrthanc, seg_blob: bytes
) -> None:
    settings = settings_for(tmp_path, orthanc.dicom_port)
    row = seg_delivery(db, settings, seg_blob)
    assert row.destination == f"dicom://GKDEST@127.0.0.1:{orthanc.dicom_port}"
    assert delivery.deliver(settings, delivery_id=row.id) == "retry"  # Orthanc is not up yet
    got = state(db, row)
    assert got.status == DeliveryStatus.PENDING and "no association" in (got.last_error or ""), got.last_error
    orthanc.start()
    due_now(db, row)
    assert delivery.deliver(settings, delivery_id=row.id) == "delivered"
    got = state(db, row)
    assert got.status == DeliveryStatus.DELIVERED and got.attempts == 2 and got.last_http_status is None
    tags = orthanc_holds(orthanc, got.seg_sop_uid or "")
    assert tags["Modality"] == "SEG" and tags["SegmentSequence"][0]["SegmentAlgorithmType"] == "AUTOMATIC"
    # sent again (a lost response, an admin's resend): Orthanc keeps one copy and answers success
    row.status = DeliveryStatus.FAILED
    db.flush()
    delivery.send_again(session=db, delivery_id=row.id, actor="admin")
    assert delivery.deliver(settings, delivery_id=row.id) == "delivered"
    with orthanc.client() as o:
        assert len(o.get("/instances").json()) == 1


def test_an_ae_orthanc_does_not_know_is_refused_at_once(
    db: Session, tmp_path: Path, orthanc: PrivateOrthanc, seg_blob: bytes
) -> None:
    orthanc.start()
    settings = settings_for(tmp_path, orthanc.dicom_port, dimse_ae_title="STRANGER")  # not in its modalities
    row = seg_delivery(db, settings, seg_blob)
    assert delivery.deliver(settings, delivery_id=row.id) == "failed", state(db, row).last_error
    got = state(db, row)
    assert got.status == DeliveryStatus.FAILED and got.attempts == 1, got.last_error
    assert got.last_error == "association rejected (permanent)"
    with orthanc.client() as o:
        assert o.get("/instances").json() == []


@pytest.fixture
def storescp(tmp_path: Path) -> tuple[int, Path]:
    """A free port for dcmtk's storescp and the folder it writes what it receives to."""
    if shutil.which("storescp") is None:
        subprocess.run(["bash", "scripts/install-orthanc.sh"], capture_output=True, timeout=600)  # dcmtk too
    if shutil.which("storescp") is None:
        pytest.skip("dcmtk's storescp is not installed and cannot be")
    folder = tmp_path / "received"
    folder.mkdir()
    return free_port(), folder


def start_storescp(port: int, folder: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(["storescp", "-aet", "GKDEST", "-od", str(folder), *args, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            assert time.monotonic() < deadline, "storescp did not listen"
            time.sleep(0.05)


def test_c_store_to_dcmtk_storescp_sends_the_seg_as_stored(
    db: Session, tmp_path: Path, storescp: tuple[int, Path], seg_blob: bytes
) -> None:
    port, folder = storescp
    settings = settings_for(tmp_path, port)
    row = seg_delivery(db, settings, seg_blob)
    assert delivery.deliver(settings, delivery_id=row.id) == "retry"  # nothing listens yet
    accepting = start_storescp(port, folder)
    try:
        due_now(db, row)
        assert delivery.deliver(settings, delivery_id=row.id) == "delivered"
    finally:
        stop_group(accepting)
    [received] = list(folder.iterdir())
    got, sent = pydicom.dcmread(received), pydicom.dcmread(io.BytesIO(seg_blob))
    assert got.SOPInstanceUID == sent.SOPInstanceUID and got.PixelData == sent.PixelData
    assert got.SOPClassUID == sent.SOPClassUID and state(db, row).last_error is None


def test_dcmtk_refusing_every_association_fails_at_once(
    db: Session, tmp_path: Path, storescp: tuple[int, Path], seg_blob: bytes
) -> None:
    """storescp --refuse closes the connection right after its A-ASSOCIATE-RJ: still a permanent refusal
    (pynetdicom alone reported it as an abort now and then: tests/unit/test_dimse_rejection.py)."""
    port, folder = storescp
    settings = settings_for(tmp_path, port)
    refusing = start_storescp(port, folder, "--refuse")
    try:
        for _ in range(5):
            row = seg_delivery(db, settings, seg_blob)
            assert delivery.deliver(settings, delivery_id=row.id) == "failed", state(db, row).last_error
            assert state(db, row).last_error == "association rejected (permanent)"
    finally:
        stop_group(refusing)
    assert list(folder.iterdir()) == []


def test_status_meanings_and_settings() -> None:
    assert read_status(0x0000).acknowledged and read_status(0xB000).acknowledged
    assert read_status(0x0111).acknowledged  # already held: a previous attempt's response was lost
    assert read_status(0xA700).retryable and not read_status(0xA700).acknowledged
    refused = read_status(0xC000)
    assert not refused.retryable and not refused.acknowledged and "0xC000" in refused.detail
    with pytest.raises(ValidationError, match="not both"):
        Settings(seg_destination_url="http://pacs/dicom-web", seg_destination_dimse_host="pacs",
                 seg_destination_dimse_port=104, seg_destination_ae_title="PACS")  # fmt: skip
    with pytest.raises(ValidationError, match="AE_TITLE"):
        Settings(seg_destination_dimse_host="pacs", seg_destination_dimse_port=104)

"""An association the destination rejects is read as rejected, however fast the peer closes afterwards.

pynetdicom 3.0 races here: when the A-ASSOCIATE-RJ and the peer's close both arrive before its ACSE thread
looks at the socket, the association ends as *aborted* with no reject primitive (Orthanc refusing an
unknown AE did this about one time in six here; CI once read a permanent refusal as worth retrying). The
peer below is a real TCP socket that answers every request with an A-ASSOCIATE-RJ and closes at once."""

from __future__ import annotations

import io
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest

from app.core.config import Settings
from app.services.destination_dimse import send_seg_dimse
from testkit.tiny_models import sample_visit


@contextmanager
def rejecting_peer(result: int) -> Iterator[int]:
    """A listening port whose peer reads each A-ASSOCIATE-RQ, answers A-ASSOCIATE-RJ (``result``: 1
    permanent, 2 transient; source 1, reason 3: calling AE title not recognised) and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                header = conn.recv(6)  # PDU type, reserved, length
                if len(header) == 6:
                    length = struct.unpack(">I", header[2:])[0]
                    while length > 0 and (chunk := conn.recv(min(length, 65536))):
                        length -= len(chunk)
                    conn.sendall(bytes([0x03, 0x00]) + struct.pack(">I", 4) + bytes([0x00, result, 0x01, 0x03]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.fixture(scope="module")
def seg() -> tuple[bytes, str]:
    """Any DICOM instance does: the peer rejects before a C-STORE could be sent."""
    _, _, blobs = sample_visit("GK-REJECT")
    return blobs[0], str(pydicom.dcmread(io.BytesIO(blobs[0])).SOPInstanceUID)


def settings(tmp_path: Path, port: int) -> Settings:
    return Settings(storage_dir=tmp_path, seg_destination_dimse_host="127.0.0.1", seg_destination_dimse_port=port,
                    seg_destination_ae_title="GKDEST", delivery_timeout_s=5)  # fmt: skip


REJECTIONS = [(1, False, "association rejected (permanent)"), (2, True, "association rejected (transient)")]


@pytest.mark.parametrize(("result", "retryable", "detail"), REJECTIONS)
def test_a_rejection_and_an_immediate_close_read_as_a_rejection(
    tmp_path: Path, seg: tuple[bytes, str], result: int, retryable: bool, detail: str
) -> None:
    blob, sop = seg
    with rejecting_peer(result) as port:
        outcomes = [send_seg_dimse(settings(tmp_path, port), blob, sop) for _ in range(30)]
        assert [(o.acknowledged, o.retryable, o.detail) for o in outcomes] == [(False, retryable, detail)] * 30

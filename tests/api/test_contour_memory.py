"""Hostile contour uploads: small bodies that would inflate to gigabytes, and a chunked body with no length.

Each is refused with a 4xx and a precise message while the API's resident memory grows by less than
100 MiB (its peak, VmHWM, is reset before each request through /proc/PID/clear_refs).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from app.client import stow
from testkit.dicom_factory import make_series
from tests.conftest import Stack

pytestmark = pytest.mark.integration
MiB = 1024**2
GROWTH_LIMIT = 100 * MiB


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _growth(stack: Stack, send) -> tuple[object, int]:  # type: ignore[no-untyped-def]
    """(the reply, how far the API's peak RSS rose above its RSS before the request)."""
    pid = stack.service.api.pid  # type: ignore[union-attr]
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kib(pid, "VmRSS")
    reply = send()
    return reply, _status_kib(pid, "VmHWM") - before


@pytest.fixture(scope="module")
def claimed(stack: Stack) -> int:
    """A manual case (no scorer is promoted) claimed by the radiologist."""
    spec, blobs = make_series(4)
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{spec.series_uid}/complete")
    state = stack.wait_status(spec.series_uid, {"manual"})
    case_id = int(stack.scalar("SELECT id FROM cases WHERE series_id=:i", i=state["id"]))  # type: ignore[arg-type]
    with stack.client("radiologist") as reader:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
    return case_id


def _zeros(n: int) -> Iterator[bytes]:
    chunk = bytes(16 * MiB)
    while n > 0:
        yield chunk[: min(n, len(chunk))]
        n -= len(chunk)


def _compress(head: bytes, zeros: int, wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [packer.compress(head)] + [packer.compress(z) for z in _zeros(zeros)]
    return b"".join([*out, packer.flush()])


def nifti_bomb() -> bytes:
    """About 1 MB of gzip declaring 2048 x 2048 x 256 voxels (1 GiB), in an orientation that needs a flip."""
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 256))
    header.set_data_dtype(np.uint8)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    return _compress(header.binaryblock + b"\0" * 4, 2048 * 2048 * 256, 31)


def deflated_seg() -> bytes:
    """A SEG whose data set is deflated (about 0.5 MB inflating to 512 MiB of pixel data)."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = pydicom.filebase.DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    pixels = 512 * MiB
    # (0008,0060) CS "SEG", (0028,0010) and (0028,0011) US 32, then (7FE0,0010) OB of `pixels` bytes
    body = (struct.pack("<HH2sH", 0x0008, 0x0060, b"CS", 4) + b"SEG "
            + struct.pack("<HH2sHH", 0x0028, 0x0010, b"US", 2, 32)
            + struct.pack("<HH2sHH", 0x0028, 0x0011, b"US", 2, 32)
            + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, pixels))  # fmt: skip
    return b"\0" * 128 + b"DICM" + buf.getvalue() + _compress(body, pixels, -15)


@pytest.mark.parametrize(
    ("name", "media", "make"),
    [("nifti_bomb", "application/gzip", nifti_bomb), ("deflated_seg", "application/dicom", deflated_seg)],
)
def test_small_contours_declaring_gigabytes_are_refused_within_bounded_memory(  # type: ignore[no-untyped-def]
    stack: Stack, claimed: int, name, media, make
) -> None:
    body = make()
    assert len(body) < 2 * MiB, len(body)
    with stack.client("radiologist") as reader:
        reply, grown = _growth(stack, lambda: reader.post(f"/queue/{claimed}/contour", content=body,
                                                          headers={"Content-Type": media}))  # fmt: skip
    assert reply.status_code == 422, reply.text  # type: ignore[attr-defined]
    print(name, reply.json()["detail"], f"{grown / MiB:.0f} MiB")  # type: ignore[attr-defined]
    assert grown < GROWTH_LIMIT, f"{name}: the API grew by {grown / MiB:.0f} MiB"
    assert stack.scalar("SELECT status FROM cases WHERE id=:i", i=claimed) == "claimed"  # nothing changed


def test_chunked_contour_is_streamed_and_bounded(stack: Stack, claimed: int) -> None:
    """No Content-Length: counted while streamed to disk, refused past the limit (64 MiB on the test stack)."""

    def body() -> Iterator[bytes]:
        yield from _zeros(200 * MiB)

    with stack.client("radiologist") as reader:
        reply, grown = _growth(stack, lambda: reader.post(f"/queue/{claimed}/contour", content=body(),
                                                          headers={"Content-Type": "application/gzip"}))  # fmt: skip
    assert reply.status_code == 413, reply.text  # type: ignore[attr-defined]
    assert grown < GROWTH_LIMIT, f"the API grew by {grown / MiB:.0f} MiB"
    assert stack.scalar("SELECT status FROM cases WHERE id=:i", i=claimed) == "claimed"
    assert not list((stack.storage / "tmp").glob("*")), "the refused body was left on disk"

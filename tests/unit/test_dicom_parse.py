"""Hostile files get a precise failure reason, never an exception or a crash."""

from __future__ import annotations

import contextlib
import io
import random
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from app.dicom.parse import parse_instance
from app.services.failures import FailureReason, InvalidInstance
from testkit.dicom_factory import ct_dataset, make_series, to_bytes


def _reason(tmp_path: Path, blob: bytes) -> FailureReason:
    path = tmp_path / "x.dcm"
    path.write_bytes(blob)
    with pytest.raises(InvalidInstance) as info:
        parse_instance(path)
    return info.value.reason


def _valid() -> tuple[Dataset, bytes]:
    spec, _ = make_series(1)
    ds = ct_dataset(spec, 0)
    return ds, to_bytes(ds)


def test_valid_file_parses(tmp_path: Path) -> None:
    ds, blob = _valid()
    path = tmp_path / "ok.dcm"
    path.write_bytes(blob)
    header = parse_instance(path)
    assert header.sop_instance_uid == ds.SOPInstanceUID and header.modality == "CT"


@pytest.mark.parametrize("cut", [10, 131, 200, 400, -1, -100])
def test_truncated(tmp_path: Path, cut: int) -> None:
    _, blob = _valid()
    assert _reason(tmp_path, blob[:cut]) in (FailureReason.CANNOT_UNDERSTAND, FailureReason.DATASET_MISMATCH)


def test_missing_uid(tmp_path: Path) -> None:
    ds, _ = _valid()
    del ds.SeriesInstanceUID
    assert _reason(tmp_path, to_bytes(ds)) == FailureReason.DATASET_MISMATCH


def test_invalid_uid_characters(tmp_path: Path) -> None:
    ds, _ = _valid()
    ds.StudyInstanceUID = "1.2.../../etc"
    assert _reason(tmp_path, to_bytes(ds)) == FailureReason.DATASET_MISMATCH


def test_deflated_is_refused_before_inflating(tmp_path: Path) -> None:
    ds, _ = _valid()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    assert _reason(tmp_path, buf.getvalue()) == FailureReason.TRANSFER_SYNTAX


def test_huge_rows_columns(tmp_path: Path) -> None:
    ds, _ = _valid()
    ds.Rows, ds.Columns = 65535, 65535
    assert _reason(tmp_path, to_bytes(ds)) == FailureReason.OUT_OF_RESOURCES


def test_pixel_length_mismatch(tmp_path: Path) -> None:
    ds, _ = _valid()
    ds.PixelData = ds.PixelData[:-100]
    assert _reason(tmp_path, to_bytes(ds)) == FailureReason.DATASET_MISMATCH


def test_deeply_nested_sequences(tmp_path: Path) -> None:
    ds, _ = _valid()
    inner = Dataset()
    for _ in range(40):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    ds.ReferencedImageSequence = Sequence([inner])
    assert _reason(tmp_path, to_bytes(ds)) == FailureReason.CANNOT_UNDERSTAND


def test_huge_declared_length(tmp_path: Path) -> None:
    _, blob = _valid()
    at = blob.index(b"\x08\x00\x60\x00")  # (0008,0060) Modality, explicit VR: tag, VR, 2-byte length
    hacked = blob[:at] + b"\x08\x00\x60\x00UN\x00\x00\xff\xff\xff\x7f" + blob[at + 8 :]
    assert _reason(tmp_path, hacked) in set(FailureReason)


def test_random_bit_flips_never_raise_anything_else(tmp_path: Path) -> None:
    _, blob = _valid()
    rng = random.Random(7)
    path = tmp_path / "flip.dcm"
    for _ in range(300):
        data = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(128, min(len(data), 2000))
            data[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        with contextlib.suppress(InvalidInstance):
            parse_instance(path)


def test_zlib_bomb_as_part_is_just_not_dicom(tmp_path: Path) -> None:
    assert _reason(tmp_path, zlib.compress(b"\0" * 10**7)) == FailureReason.CANNOT_UNDERSTAND


def test_every_truncation_of_the_header_is_a_failure_reason(tmp_path: Path) -> None:
    """A cut in the middle of an element header once raised struct.error from pydicom (found by the corpus)."""
    _, blob = _valid()
    path = tmp_path / "cut.dcm"
    for cut in range(0, 1200):
        path.write_bytes(blob[:cut])
        with pytest.raises(InvalidInstance):
            parse_instance(path)

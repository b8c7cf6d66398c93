"""The loader's fast pixel decode gives exactly pydicom's HU, and hands anything unusual to pydicom."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from app.dicom.volume import SeriesGeometryError, _native_pixels, load_series_volume, to_hu
from testkit.dicom_factory import SeriesSpec, ct_dataset, to_bytes

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "totalseg-example" / "ct-dicom"


def _roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def _reference_hu(ds: pydicom.Dataset) -> np.ndarray:
    """The loader before the fast decode: pydicom's pixel_array, then float32 rescale."""
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return ds.pixel_array.astype(np.float32) * slope + intercept


def _dataset(signed: bool, stored: int, slope: float = 1.0, intercept: float = -1024.0) -> pydicom.Dataset:
    ds = ct_dataset(SeriesSpec(rows=16, cols=12, series_uid="1.2.3", study_uid="1.2.4"), 0)
    rng = np.random.default_rng(stored)
    raw = rng.integers(0, 2**16, size=(16, 12), dtype=np.uint16)  # the unused high bits hold garbage
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = int(signed), stored, stored - 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = raw.astype(np.int16 if signed else np.uint16).tobytes()
    return _roundtrip(ds)


@pytest.mark.parametrize(("signed", "stored"), [(True, 16), (False, 16), (True, 12), (False, 12), (True, 13)])
@pytest.mark.parametrize("slope", [1.0, 0.5])
def test_fast_decode_matches_pydicom(signed: bool, stored: int, slope: float) -> None:
    ds = _dataset(signed, stored, slope=slope, intercept=-1024.5)
    assert _native_pixels(ds) is not None  # the fast path was taken
    np.testing.assert_array_equal(to_hu(ds), _reference_hu(ds))  # bit-identical, unused bits corrected


def test_implicit_vr_takes_the_fast_path() -> None:
    ds = _dataset(True, 16)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds = _roundtrip(ds)
    assert _native_pixels(ds) is not None
    np.testing.assert_array_equal(to_hu(ds), _reference_hu(ds))


def test_unusual_data_goes_through_pydicom() -> None:
    ds = _dataset(True, 16)
    ds.PixelData = ds.PixelData[:-2]  # short buffer: pydicom decides (it raises)
    assert _native_pixels(ds) is None
    ds = _dataset(True, 16)
    ds.NumberOfFrames = 2
    assert _native_pixels(ds) is None
    ds = _dataset(True, 16)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    assert _native_pixels(ds) is None
    ds = _dataset(True, 16)
    ds.BitsAllocated = 8
    assert _native_pixels(ds) is None


def test_wrong_pixel_shape_is_a_geometry_error() -> None:
    ds = _dataset(True, 16)
    with pytest.raises(SeriesGeometryError):
        to_hu(ds, out=np.empty((16, 13), dtype=np.float32))


def test_compressed_sample_series_is_unchanged() -> None:
    """The committed sample is JPEG 2000: pydicom decodes it, the volume equals the per-slice reference."""
    paths = sorted(p for p in SAMPLE.iterdir() if p.is_file())
    volume = load_series_volume(paths)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, paths)}
    assert _native_pixels(next(iter(by_uid.values()))) is None
    expected = np.stack([_reference_hu(by_uid[uid]) for uid in volume.sop_instance_uids])
    assert volume.hu.dtype == np.float32
    np.testing.assert_array_equal(volume.hu, expected)

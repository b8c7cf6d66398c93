"""Load a CT series from DICOM files into a HU volume with checked geometry.

One code path for serving (the scoring task) and training (the scorer's data
preparation): slices ordered along the slice normal by ImagePositionPatient,
HU from RescaleSlope/RescaleIntercept, spacing and gaps checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom

# A slice further than this share of the median spacing from its expected
# place counts as a gap (a missing slice) rather than jitter.
GAP_TOLERANCE = 0.25
ORIENTATION_TOLERANCE = 1e-3


class SeriesGeometryError(ValueError):
    """No volume can be formed at all (no instances, no image with geometry, pixel data of the wrong shape)."""


@dataclass(frozen=True)
class SeriesGeometry:
    """Where the volume lies; everything the scorer and the SEG writer need."""

    n_slices: int
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing)
    slice_spacing_mm: float  # median distance between neighbouring slices
    slice_positions_mm: list[float]  # along the normal, ascending
    orientation: list[float]  # ImageOrientationPatient, 6 values
    origin_mm: list[float]  # ImagePositionPatient of the first slice
    gaps: list[int] = field(default_factory=list)  # index i: gap between i and i+1
    frame_of_reference_uid: str | None = None
    set_aside: dict[str, int] = field(default_factory=dict)  # images left out of the primary stack, by cause

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SeriesVolume:
    hu: np.ndarray  # (Z, Y, X) float32, Hounsfield units, Z ascending along the normal
    geometry: SeriesGeometry
    sop_instance_uids: list[str]  # in the order of hu's Z axis


def _slice_normal(orientation: Sequence[float]) -> np.ndarray:
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return np.cross(row, col)


def _primary_stack(headers: Sequence[pydicom.Dataset]) -> tuple[list[int], dict[str, int]]:
    """Indices of the series' primary image stack, and what was set aside, by cause.

    A localizer (ImageType LOCALIZER), an image without geometry, or a secondary image in another
    orientation or size (a coronal reformat inside an axial series) is set aside, not fatal: the primary
    stack is the largest group of images sharing orientation and Rows x Columns.
    """
    aside: dict[str, int] = {}
    groups: dict[tuple, list[int]] = {}
    for i, ds in enumerate(headers):
        kinds = [str(v).upper() for v in (ds.get("ImageType") or [])]
        if "LOCALIZER" in kinds:
            aside["localizer"] = aside.get("localizer", 0) + 1
            continue
        try:
            orientation = tuple(round(float(v) / ORIENTATION_TOLERANCE) for v in ds.ImageOrientationPatient)
            key = (orientation, int(ds.Rows), int(ds.Columns))
            position, spacing = [float(v) for v in ds.ImagePositionPatient], [float(v) for v in ds.PixelSpacing]
            if len(orientation) != 6 or len(position) != 3 or len(spacing) != 2:
                raise ValueError("malformed geometry")
        except (AttributeError, TypeError, ValueError):
            aside["no_geometry"] = aside.get("no_geometry", 0) + 1
            continue
        groups.setdefault(key, []).append(i)
    if not groups:
        raise SeriesGeometryError("series has no image stack with geometry (only localizers or images without "
                                  "ImagePositionPatient / ImageOrientationPatient / PixelSpacing)")  # fmt: skip
    ranked = sorted(groups.values(), key=len, reverse=True)
    others = sum(len(g) for g in ranked[1:])
    if others:
        aside["other_orientation_or_size"] = others
    return ranked[0], aside


def order_and_check(headers: Sequence[pydicom.Dataset]) -> tuple[list[int], SeriesGeometry]:
    """The primary stack's slices ordered along the normal (indices into ``headers``) and its geometry.

    Images outside the primary stack, and all but the first image at one position along the normal, are
    set aside and counted in ``SeriesGeometry.set_aside``; ``geometry_doubt`` says whether the gate may
    judge what is left.
    """
    if not headers:
        raise SeriesGeometryError("series has no instances")
    primary, aside = _primary_stack(headers)
    first = headers[primary[0]]
    orientation = [float(v) for v in first.ImageOrientationPatient]
    rows, cols = int(first.Rows), int(first.Columns)
    normal = _slice_normal(orientation)
    positions = {i: float(np.dot(normal, [float(v) for v in headers[i].ImagePositionPatient])) for i in primary}
    order = sorted(primary, key=lambda i: positions[i])  # stable: the first received wins a shared position
    kept = [order[0]]
    for i in order[1:]:
        if positions[i] - positions[kept[-1]] < 1e-3:
            aside["duplicate_position"] = aside.get("duplicate_position", 0) + 1
        else:
            kept.append(i)
    sorted_pos = np.array([positions[i] for i in kept])
    steps = np.diff(sorted_pos)
    spacing = float(np.median(steps)) if len(steps) else float(getattr(first, "SliceThickness", 1.0) or 1.0)
    gaps = [i for i, s in enumerate(steps) if s > spacing * (1 + GAP_TOLERANCE)]
    ref = headers[kept[0]]
    geometry = SeriesGeometry(
        n_slices=len(kept),
        rows=rows,
        columns=cols,
        pixel_spacing_mm=tuple(float(v) for v in first.PixelSpacing),  # type: ignore[arg-type]
        slice_spacing_mm=spacing,
        slice_positions_mm=[float(p) for p in sorted_pos],
        orientation=orientation,
        origin_mm=[float(v) for v in ref.ImagePositionPatient],
        gaps=gaps,
        frame_of_reference_uid=str(getattr(first, "FrameOfReferenceUID", "")) or None,
        set_aside=aside,
    )
    return kept, geometry


def geometry_doubt(geometry: SeriesGeometry) -> tuple[str, str] | None:
    """(reason, detail) when the gate cannot judge the volume and a radiologist must see it; None when it can.

    A gap (a missing slice) leaves no regular grid to segment; two images at one position leave the gate
    unable to say which one is the series; a primary stack no larger than the images set aside for another
    orientation or size is no clear primary stack.
    """
    if geometry.gaps:
        return (
            "slice_gap",
            f"slices missing after slice index {geometry.gaps[:10]} (median spacing "
            f"{geometry.slice_spacing_mm:.2f} mm)",
        )
    if geometry.set_aside.get("duplicate_position"):
        return (
            "duplicate_positions",
            f"two slices share one position along the normal ({geometry.set_aside['duplicate_position']} set aside)",
        )
    if geometry.set_aside.get("other_orientation_or_size", 0) >= geometry.n_slices:
        return "mixed_orientation", "no clear primary stack: as many images in another orientation or size"
    return None


def read_geometry(paths: Sequence[Path]) -> SeriesGeometry:
    """The primary stack's geometry from the headers alone (no pixel data)."""
    return order_and_check([pydicom.dcmread(p, stop_before_pixels=True) for p in paths])[1]


# Uncompressed little-endian transfer syntaxes (Implicit, Explicit, Deflated Explicit VR):
# PixelData is the raw frame, so it can be viewed in place instead of going through
# pydicom's decoder framework (validation, options, copies: most of the read time).
_NATIVE_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"})


def _native_pixels(ds: pydicom.Dataset) -> np.ndarray | None:
    """(Y, X) int16/uint16 view of uncompressed 16-bit single-frame mono data; None: use pydicom.

    Anything unusual (another bit depth, several frames or samples, a buffer of the
    wrong length, big endian, compressed) returns None and goes through
    ``ds.pixel_array``, which validates and decodes it.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or str(getattr(meta, "TransferSyntaxUID", "")) not in _NATIVE_LE or "PixelData" not in ds:
        return None
    try:
        rows, cols, stored = int(ds.Rows), int(ds.Columns), int(ds.BitsStored)
        ok = int(ds.BitsAllocated) == 16 and int(ds.get("SamplesPerPixel", 1)) == 1
        ok = ok and int(ds.get("NumberOfFrames", 1) or 1) == 1 and int(ds.PixelRepresentation) in (0, 1)
    except (AttributeError, TypeError, ValueError):
        return None
    data = ds.PixelData
    if not ok or not 1 <= stored <= 16 or rows < 1 or cols < 1 or not isinstance(data, bytes | bytearray):
        return None
    if len(data) not in (rows * cols * 2, rows * cols * 2 + 1):  # + 1: the even-length padding byte
        return None
    dtype = np.dtype("<i2" if int(ds.PixelRepresentation) else "<u2")
    arr = np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
    if stored < 16:  # as pydicom's correct_unused_bits: shift the unused high bits out (sign-extends signed data)
        shift = 16 - stored
        arr = np.right_shift(np.left_shift(arr, shift), shift)
    return arr


def _rescale(ds: pydicom.Dataset) -> tuple[float, float]:
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return slope, intercept


def to_hu(ds: pydicom.Dataset, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values to Hounsfield units, (Y, X) float32; written into ``out`` when given.

    float32 arithmetic throughout (stored value cast to float32, times slope, plus
    intercept), so the fast and the pydicom decodes give bit-identical HU.
    """
    pixels = _native_pixels(ds)
    if pixels is None:
        pixels = ds.pixel_array
    if out is not None and pixels.shape != out.shape:
        raise SeriesGeometryError(f"pixel data of shape {pixels.shape}, expected {out.shape}")
    if out is None:
        out = np.empty(pixels.shape, dtype=np.float32)
    slope, intercept = _rescale(ds)
    if slope == 1.0:  # the usual CT case: one pass (x * 1 is exact, so the result is the same)
        np.add(pixels, np.float32(intercept), out=out, dtype=np.float32, casting="unsafe")
        return out
    np.multiply(pixels, np.float32(slope), out=out, dtype=np.float32, casting="unsafe")
    out += np.float32(intercept)
    return out


def load_series_volume(paths: Sequence[Path]) -> SeriesVolume:
    """Read every slice, order along the normal, convert to HU (one float32 volume, no per-slice copies)."""
    datasets = [pydicom.dcmread(p) for p in paths]
    order, geometry = order_and_check(datasets)
    hu = np.empty((len(order), geometry.rows, geometry.columns), dtype=np.float32)  # (Z, Y, X)
    for k, i in enumerate(order):
        to_hu(datasets[i], out=hu[k])
    uids = [str(datasets[i].SOPInstanceUID) for i in order]
    return SeriesVolume(hu=hu, geometry=geometry, sop_instance_uids=uids)

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
    """The slices cannot form one volume (mixed orientation or size, duplicates)."""


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


def read_series_headers(paths: Sequence[Path]) -> list[pydicom.Dataset]:
    """Headers only (no pixels), for geometry checks that must stay cheap."""
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def order_and_check(headers: Sequence[pydicom.Dataset]) -> tuple[list[int], SeriesGeometry]:
    """Order slices along the normal and check that they form one regular volume."""
    if not headers:
        raise SeriesGeometryError("series has no instances")
    first = headers[0]
    orientation = [float(v) for v in first.ImageOrientationPatient]
    rows, cols = int(first.Rows), int(first.Columns)
    for ds in headers:
        other = [float(v) for v in ds.ImageOrientationPatient]
        if not np.allclose(other, orientation, atol=ORIENTATION_TOLERANCE):
            raise SeriesGeometryError("slices have different ImageOrientationPatient")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise SeriesGeometryError("slices have different Rows x Columns")
    normal = _slice_normal(orientation)
    positions = np.array([np.dot(normal, [float(v) for v in ds.ImagePositionPatient]) for ds in headers])
    order = [int(i) for i in np.argsort(positions, kind="stable")]
    sorted_pos = positions[order]
    steps = np.diff(sorted_pos)
    if len(steps) and np.min(steps) < 1e-3:
        raise SeriesGeometryError("two slices share one position along the normal")
    spacing = float(np.median(steps)) if len(steps) else float(getattr(first, "SliceThickness", 1.0) or 1.0)
    gaps = [i for i, s in enumerate(steps) if s > spacing * (1 + GAP_TOLERANCE)]
    ref = headers[order[0]]
    geometry = SeriesGeometry(
        n_slices=len(headers),
        rows=rows,
        columns=cols,
        pixel_spacing_mm=tuple(float(v) for v in first.PixelSpacing),  # type: ignore[arg-type]
        slice_spacing_mm=spacing,
        slice_positions_mm=[float(p) for p in sorted_pos],
        orientation=orientation,
        origin_mm=[float(v) for v in ref.ImagePositionPatient],
        gaps=gaps,
        frame_of_reference_uid=str(getattr(first, "FrameOfReferenceUID", "")) or None,
    )
    return order, geometry


def to_hu(ds: pydicom.Dataset) -> np.ndarray:
    """Stored values to Hounsfield units, (Y, X) float32."""
    pixels = ds.pixel_array.astype(np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return pixels * slope + intercept


def load_series_volume(paths: Sequence[Path]) -> SeriesVolume:
    """Read every slice, order along the normal, convert to HU."""
    datasets = [pydicom.dcmread(p) for p in paths]
    order, geometry = order_and_check(datasets)
    hu = np.stack([to_hu(datasets[i]) for i in order])  # (Z, Y, X)
    uids = [str(datasets[i].SOPInstanceUID) for i in order]
    return SeriesVolume(hu=hu, geometry=geometry, sop_instance_uids=uids)

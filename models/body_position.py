"""Slice position that means the same anatomy across patients, from the image alone.

The raw z coordinate has an arbitrary origin per scanner and patient, and the
slice index depends on thickness and coverage. We instead measure the signed
distance in mm from an anatomical landmark, the **lung base**: the most caudal
slice on which the lungs (air-density tissue, < -400 HU, *inside* the body)
cover at least ``base_area_cm2``. Positive values are cranial.

How lung is told apart from other air:
- air outside the patient is excluded by the body mask (largest 2-D component
  of tissue > -500 HU, holes filled, so the lungs become part of the body);
- bowel and stomach gas is excluded by keeping only 3-D connected air
  components that are large (peak cross-section >= ``min_peak_area_cm2``)
  and long (cranio-caudal extent >= ``min_extent_mm``), or that reach the
  cranial end of the volume with a large cross-section there.

Fallbacks (documented, never silent):
- lung present on the most caudal slice: the base lies at or below the
  volume; positions are measured from that slice (a lower bound) and
  ``landmark`` says so;
- no lung at all (abdomen/pelvis-only series): ``landmark == "none"`` and all
  positions are NaN. The conditioned scorer maps NaN to a learned "unknown
  position" embedding instead of guessing.

Numpy/scipy array code; no files, no settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from models.masks import dilate_inplane_3x3, fill_holes_2d, largest_component_2d, open_inplane_3x3

POSITION_SCALE_MM = 300.0  # normalised position = mm from the lung base / this, clipped
POSITION_CLIP = 1.5


@dataclass(frozen=True)
class BodyPositionConfig:
    work_pixel_mm: float = 4.0  # in-plane resolution the detector works at
    tissue_hu: float = -500.0
    lung_hu: float = -400.0
    padding_threshold_hu: float = -1100.0
    base_area_cm2: float = 10.0
    min_peak_area_cm2: float = 30.0
    min_extent_mm: float = 40.0

    def __post_init__(self) -> None:
        if self.work_pixel_mm <= 0:
            raise ValueError(f"work_pixel_mm must be > 0, got {self.work_pixel_mm}")
        if self.lung_hu >= self.tissue_hu + 200 or self.lung_hu <= -1000:
            raise ValueError(f"lung_hu must lie in (-1000, tissue_hu + 200), got {self.lung_hu}")
        if min(self.base_area_cm2, self.min_peak_area_cm2, self.min_extent_mm) <= 0:
            raise ValueError("base_area_cm2, min_peak_area_cm2 and min_extent_mm must be > 0")


@dataclass
class BodyPosition:
    landmark: str  # "lung_base" | "lung_base_at_or_below_first_slice" | "none"
    landmark_mm: float | None  # position of the landmark along the normal
    position_mm: np.ndarray  # (Z,) signed mm from the landmark, cranial positive; NaN if unknown
    normalised: np.ndarray  # (Z,) position_mm / POSITION_SCALE_MM clipped to +-POSITION_CLIP; NaN if unknown
    lung_area_cm2: np.ndarray  # (Z,) area of detected lung per slice


def normalise_position(position_mm: np.ndarray) -> np.ndarray:
    """Signed mm from the landmark -> roughly [-1, 1] (NaN stays NaN)."""
    return np.clip(np.asarray(position_mm, dtype=np.float64) / POSITION_SCALE_MM, -POSITION_CLIP, POSITION_CLIP)


def _downsample(hu: np.ndarray, pixel_spacing_mm: tuple[float, float], work_mm: float) -> tuple[np.ndarray, float]:
    """(Z, Y, X) -> (Z, y, x) at about ``work_mm``; returns the pixel area in cm^2."""
    z, rows, cols = hu.shape
    h = max(8, round(rows * pixel_spacing_mm[0] / work_mm))
    w = max(8, round(cols * pixel_spacing_mm[1] / work_mm))
    t = torch.as_tensor(hu, dtype=torch.float32)[:, None]
    small = F.interpolate(t, size=(h, w), mode="area")[:, 0].numpy()
    area_cm2 = (rows * pixel_spacing_mm[0] / h) * (cols * pixel_spacing_mm[1] / w) / 100.0
    return small, area_cm2


def body_masks(hu: np.ndarray, config: BodyPositionConfig) -> np.ndarray:
    """(Z, y, x) bool: per slice, the largest tissue component with its holes (lungs, bowel) filled."""
    return fill_holes_2d(largest_component_2d(hu > config.tissue_hu))  # slice by slice, in one pass


def lung_mask(hu: np.ndarray, positions_mm: np.ndarray, area_cm2: float, config: BodyPositionConfig) -> np.ndarray:
    """(Z, y, x) bool: internal air components that look like lung (see module docstring)."""
    air = (hu < config.lung_hu) & (hu >= config.padding_threshold_hu) & body_masks(hu, config)
    # an in-plane opening cuts thin partial-volume bridges between lung and
    # bowel gas under the diaphragm before the 3-D labelling
    core = open_inplane_3x3(air)
    labels, n = ndimage.label(core)  # 6-connected in 3-D
    keep = np.zeros(n + 1, dtype=bool)
    for comp, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        member = labels[sl] == comp  # (z, y, x) inside the bounding box
        per_slice = member.sum(axis=(1, 2)) * area_cm2  # (z,)
        z0, z1 = sl[0].start, sl[0].stop - 1
        extent = float(positions_mm[z1] - positions_mm[z0])
        large = per_slice.max() >= config.min_peak_area_cm2
        reaches_top = z1 == hu.shape[0] - 1 and per_slice[-1] >= config.min_peak_area_cm2
        keep[comp] = large and (extent >= config.min_extent_mm or reaches_top)
    kept = keep[labels]
    return dilate_inplane_3x3(kept) & air


def find_body_position(
    hu: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    slice_positions_mm: np.ndarray | list[float],
    config: BodyPositionConfig | None = None,
) -> BodyPosition:
    """Signed distance of every slice from the lung base (see module docstring for fallbacks)."""
    config = config or BodyPositionConfig()
    positions = np.asarray(slice_positions_mm, dtype=np.float64)
    if hu.ndim != 3 or hu.shape[0] != positions.size:
        raise ValueError(f"hu must be (Z, Y, X) with Z == len(slice_positions_mm); got {hu.shape}, {positions.size}")
    small, area_cm2 = _downsample(np.asarray(hu), pixel_spacing_mm, config.work_pixel_mm)
    lung = lung_mask(small, positions, area_cm2, config)
    lung_area = lung.sum(axis=(1, 2)) * area_cm2  # (Z,)
    present = np.flatnonzero(lung_area >= config.base_area_cm2)
    if present.size == 0:
        nan = np.full(positions.shape, np.nan)
        return BodyPosition("none", None, nan, nan.copy(), lung_area)
    base = int(present[0])
    landmark = "lung_base" if base > 0 else "lung_base_at_or_below_first_slice"
    if base > 0:
        # interpolate between the last slice below and the first slice above the area threshold
        a0, a1 = lung_area[base - 1], lung_area[base]
        t = (config.base_area_cm2 - a0) / max(a1 - a0, 1e-6)
        base_mm = float(positions[base - 1] + t * (positions[base] - positions[base - 1]))
    else:
        base_mm = float(positions[0])
    position_mm = positions - base_mm
    return BodyPosition(landmark, base_mm, position_mm, normalise_position(position_mm), lung_area)

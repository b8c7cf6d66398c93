"""A series around its liver on a 1 mm grid: the one preprocessing of every patch scorer.

Training, evaluation and the worker call ``liver_grid`` with a liver mask (ground truth in training, the
segmenter's prediction in the worker) and get:
- ``images`` (Z, C, H, W): slices at -3, 0, +3 mm (linear interpolation along z), resampled in-plane to
  ``pixel_mm`` and cropped to the liver's bounding box plus a margin; intensities centred on the
  series' own liver median and scaled by ``hu_scale`` into [-1, 1]. Centring on the patient's own liver
  takes out contrast phase and scanner offsets (an unenhanced liver is ~55 HU, a portal-venous one
  ~120), so patches from different patients are comparable;
- ``liver`` (Z, H, W) bool: the mask on that grid, holes filled (a lesion the segmenter left out stays
  inside the region that is scored);
- ``conditions`` (Z, 2): body position (``models.body_position``, from the image) and the cranio-caudal
  fraction within the liver (0 at its caudal tip, 1 at its dome). The in-plane fractions are added per
  patch (``patch_conditions``);
- ``box``: where the grid lies in the series, to put heat-maps back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.masks import fill_holes_2d_boxed
from models.transforms import interpolate_along_z, lower_median


@dataclass(frozen=True)
class GridConfig:
    pixel_mm: float = 1.0
    neighbour_mm: float = 3.0  # channels at -d, 0, +d mm
    margin_mm: float = 16.0  # around the liver's bounding box
    hu_scale: float = 200.0  # (HU - liver median) / hu_scale, clipped to [-1, 1]

    def as_json(self) -> dict:
        return {k: getattr(self, k) for k in ("pixel_mm", "neighbour_mm", "margin_mm", "hu_scale")}


@dataclass
class GridBox:
    """The grid's window in series pixels (rows y0:y1, columns x0:x1) and its size on the grid."""

    y0: int
    y1: int
    x0: int
    x1: int
    height: int
    width: int


@dataclass
class LiverGrid:
    images: torch.Tensor  # (Z, C, H, W) float32 in [-1, 1]
    liver: torch.Tensor  # (Z, H, W) bool, holes filled
    conditions: torch.Tensor  # (Z, 2): body position, liver fraction (NaN where unknown)
    liver_median_hu: float
    box: GridBox
    liver_slices: np.ndarray  # (Z,) bool: slices with liver on the grid


def liver_fraction(liver: np.ndarray) -> np.ndarray:
    """(Z, Y, X) -> (Z,): slice index within the liver's cranio-caudal extent, 0 caudal .. 1 cranial; NaN outside.

    Slices are in ascending position order (the DICOM normal, cranial last in an axial supine series).
    """
    present = np.flatnonzero(np.asarray(liver).reshape(liver.shape[0], -1).any(1))
    out = np.full(liver.shape[0], np.nan)
    if present.size == 0:
        return out
    lo, hi = int(present[0]), int(present[-1])
    idx = np.arange(lo, hi + 1)
    out[lo : hi + 1] = (idx - lo) / max(hi - lo, 1)
    return out


def _box(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, ...], spacing: tuple[float, float],
         config: GridConfig) -> tuple[int, int, int, int]:  # fmt: skip
    """The liver's rows and columns (indices holding liver) plus the margin, inside the image."""
    my, mx = int(np.ceil(config.margin_mm / spacing[0])), int(np.ceil(config.margin_mm / spacing[1]))
    y0, y1 = max(0, int(rows[0]) - my), min(shape[1], int(rows[-1]) + 1 + my)
    x0, x1 = max(0, int(cols[0]) - mx), min(shape[2], int(cols[-1]) + 1 + mx)
    return y0, y1, x0, x1


def liver_grid(
    hu: np.ndarray | torch.Tensor,
    spacing_mm: tuple[float, float],
    positions_mm: np.ndarray | list[float],
    liver: np.ndarray,
    body_position: np.ndarray,
    config: GridConfig | None = None,
    centre_only: bool = False,
) -> LiverGrid:
    """See the module docstring. ``body_position`` (Z,) normalised (NaN unknown); ``liver`` must not be empty.

    ``centre_only``: ``images`` holds the slice itself only, (Z, 1, H, W), the same values as the centre
    channel of the full grid: what the deviation rule reads, without the +-d mm planes it does not."""
    config = config or GridConfig()
    liver = np.asarray(liver, dtype=bool)
    per_slice = np.asarray(liver.reshape(liver.shape[0], -1).any(1))  # the one pass over the whole mask
    if not per_slice.any():
        raise ValueError("no liver in the mask: there is nothing for a liver scorer to look at")
    hu_t = torch.as_tensor(np.asarray(hu), dtype=torch.float32)
    # only the slices with liver (and the neighbours their +-d mm channels need) are resampled: in a
    # 300-slice abdomen the liver spans about a third of them
    present = np.flatnonzero(per_slice)
    lo, hi = int(present[0]), int(present[-1]) + 1
    footprint = np.any(liver[lo:hi], axis=0)  # (Y, X): one pass over the liver's slices gives rows and columns
    rows, cols = np.flatnonzero(np.any(footprint, axis=1)), np.flatnonzero(np.any(footprint, axis=0))
    y0, y1, x0, x1 = _box(rows, cols, liver.shape, spacing_mm, config)
    height = max(1, round((y1 - y0) * spacing_mm[0] / config.pixel_mm))
    width = max(1, round((x1 - x0) * spacing_mm[1] / config.pixel_mm))
    box = GridBox(y0, y1, x0, x1, height, width)
    pos = np.asarray(positions_mm, dtype=np.float64)
    median = lower_median(hu_t[lo:hi, y0:y1, x0:x1], liver[lo:hi, y0:y1, x0:x1])  # all of the liver's voxels
    step = float(np.min(np.diff(pos))) if pos.size > 1 else config.neighbour_mm
    extra = 0 if centre_only else int(np.ceil(config.neighbour_mm / max(step, 1e-3))) + 1
    a, b = max(0, lo - extra), min(len(pos), hi + extra)
    offsets = (0.0,) if centre_only else (-config.neighbour_mm, 0.0, config.neighbour_mm)
    images = torch.empty((len(pos), len(offsets), height, width))
    images[:lo], images[hi:] = -1.0, -1.0  # no liver: air, as the clipped scale has it
    images[lo:hi] = grid_images(hu_t[a:b], pos[a:b], box, median, config, pos[lo:hi], offsets)
    # holes filled inside the liver's own box: the margin around it is background joined to the edge, so a
    # hole of the tight box is exactly a hole of the margined one
    ty0, ty1, tx0, tx1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    filled = np.zeros((hi - lo, y1 - y0, x1 - x0), dtype=np.float32)  # the liver's slices only: no liver elsewhere
    filled[:, ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0] = fill_holes_2d_boxed(liver[lo:hi, ty0:ty1, tx0:tx1])
    liver_g = torch.zeros((len(pos), height, width), dtype=torch.bool)
    liver_g[lo:hi] = (
        F.interpolate(torch.from_numpy(filled)[:, None], size=(height, width), mode="bilinear")[:, 0] >= 0.5
    )
    conditions = torch.stack(
        [
            torch.as_tensor(np.asarray(body_position, dtype=np.float32)),
            torch.as_tensor(liver_fraction(per_slice[:, None, None]).astype(np.float32)),
        ],
        1,
    )
    return LiverGrid(
        images=images,
        liver=liver_g,
        conditions=conditions,
        liver_median_hu=median,
        box=box,
        liver_slices=liver_g.flatten(1).any(1).numpy(),
    )


def grid_images(
    hu: torch.Tensor | np.ndarray,
    positions_mm: np.ndarray,
    box: GridBox,
    median_hu: float,
    config: GridConfig,
    query_mm: np.ndarray,
    offsets_mm: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """(Z, Y, X) HU at ``positions_mm`` -> (M, C, H, W) grid images of slices at ``query_mm`` + each of
    ``offsets_mm`` (default -neighbour_mm, 0, +neighbour_mm).

    ``hu`` may be a few slices around the queried ones (an edited slab in evaluation): neighbours are
    interpolated between the slices given, edges replicated. A plane that falls on given slices exactly
    (the centre one, as a rule) is taken as it is: the interpolation there is the identity.
    """
    offsets = (-config.neighbour_mm, 0.0, config.neighbour_mm) if offsets_mm is None else offsets_mm
    crop = torch.as_tensor(np.asarray(hu), dtype=torch.float32)[:, box.y0 : box.y1, box.x0 : box.x1]
    small = F.interpolate(
        crop[:, None], size=(box.height, box.width), mode="bilinear", antialias=True, align_corners=False
    )
    small = small[:, 0]  # (Z, H, W)
    pos, query = torch.as_tensor(positions_mm, dtype=torch.float64), torch.as_tensor(query_mm, dtype=torch.float64)
    images = torch.stack([plane_at(small, pos, query + off) for off in offsets], 1)  # (M, C, H, W), a new tensor
    return images.sub_(median_hu).div_(config.hu_scale).clamp_(-1, 1)


def plane_at(small: torch.Tensor, pos: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """(Z, H, W) at ``pos`` -> (M, H, W) at ``query``: a gather where every query is one of the positions, a view
    where they are a run of consecutive ones (the centre plane of the slices given, as a rule)."""
    at = torch.searchsorted(pos, query).clamp(max=len(pos) - 1)
    if bool((pos[at] == query).all()):
        first = int(at[0]) if at.numel() else 0
        if torch.equal(at, torch.arange(first, first + at.numel())):
            return small[first : first + at.numel()].float()
        return small.index_select(0, at).float()
    return interpolate_along_z(small, pos, query).float()


def patch_conditions(slice_conditions: torch.Tensor, centres: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(N, 2) slice conditions, (N, 2) patch centres (row, col) on a grid of ``shape`` -> (N, 4) with the
    centre's fraction of the grid's height and width (the grid is the liver's bounding box plus margin)."""
    frac = centres.float() / torch.tensor([max(shape[0] - 1, 1), max(shape[1] - 1, 1)], dtype=torch.float32)
    return torch.cat([slice_conditions.float(), frac], 1)


def mask_to_grid(mask: np.ndarray, box: GridBox) -> torch.Tensor:
    """(Z, Y, X) or (Y, X) bool on the series grid -> float fraction on the liver grid (same leading shape)."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    squeeze = m.ndim == 2
    m = m[None] if squeeze else m
    crop = m[:, box.y0 : box.y1, box.x0 : box.x1]
    out = F.interpolate(crop[:, None], size=(box.height, box.width), mode="bilinear", align_corners=False)[:, 0]
    return out[0] if squeeze else out

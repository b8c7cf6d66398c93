"""Anomalies made from real slices, for evaluating the scorer without the position trap.

Two families, all on HU arrays (before any preprocessing), all pure numpy/scipy:

1. **Lesion transplant** (position-matched lesion test): a real tumour is cut
   out of a donor series along its mask, together with a thin rim of its own
   liver, resampled to the recipient's pixel spacing, re-levelled so that its
   contrast to its own liver is kept (``lesion HU - donor liver median +
   recipient liver median``) and blended into the recipient's liver with a
   feathered alpha: 1 on the lesion mask, falling linearly to 0 over
   ``feather_px`` pixels outside it (Euclidean distance transform). The whole
   support of the alpha must fit inside the recipient's liver mask on the
   centre slice; on neighbouring slices the alpha is cut to that slice's liver.
2. **MOOD-style synthetic anomalies** (Zimmerer et al., Medical Out-of-Distribution
   challenge): a Gaussian intensity blob (+/- HU), a local elastic warp inside a
   disc, a bright metal-like disc (3000 HU, a 1-pixel linear edge, no streaks).
   Each returns the modified slice and the boolean region it may have changed.

Geometry is in pixels of the array it works on; callers convert from mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

METAL_HU = 3000.0


def equivalent_diameter_mm(mask: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> float:
    """Diameter of the circle with the same area as the 2-D ``mask``: sqrt(4 A / pi)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    area = float(np.count_nonzero(mask)) * pixel_spacing_mm[0] * pixel_spacing_mm[1]
    return float(np.sqrt(4.0 * area / np.pi))


def diameter_bin(diameter_mm: float, edges: tuple[float, ...] = (10.0, 15.0)) -> str:
    """'<10', '10-15', '>=15' (for the default edges)."""
    if diameter_mm < edges[0]:
        return f"<{edges[0]:g}"
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if diameter_mm < hi:
            return f"{lo:g}-{hi:g}"
    return f">={edges[-1]:g}"


def feathered_alpha(mask: np.ndarray, feather_px: float) -> np.ndarray:
    """2-D alpha in [0, 1]: 1 on ``mask``, 1 - d / feather_px at distance d outside, 0 beyond."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    if feather_px <= 0:
        return mask.astype(np.float32)
    distance = ndimage.distance_transform_edt(~mask)  # 0 on the mask
    return np.clip(1.0 - distance / feather_px, 0.0, 1.0).astype(np.float32)


@dataclass
class LesionPatch:
    """A lesion slab cut from a donor series, already on the recipient's pixel grid."""

    hu: np.ndarray  # (D, h, w) float32 donor HU around the lesion (lesion and its own liver rim)
    mask: np.ndarray  # (D, h, w) bool lesion mask; slab index ``centre`` is the scored slice
    centre: int  # index of the centre slice in the slab
    donor_liver_hu: float  # median HU of the donor's liver (without lesions) on the centre slice

    def __post_init__(self) -> None:
        if self.hu.shape != self.mask.shape or self.hu.ndim != 3:
            raise ValueError(f"hu and mask must be (D, h, w) alike, got {self.hu.shape}, {self.mask.shape}")
        if not 0 <= self.centre < self.hu.shape[0]:
            raise ValueError(f"centre {self.centre} outside a slab of {self.hu.shape[0]}")
        if not self.mask[self.centre].any():
            raise ValueError("the lesion mask is empty on the centre slice")


def cut_lesion(
    hu_slab: np.ndarray, lesion_slab: np.ndarray, centre: int, donor_liver_hu: float, margin_px: int
) -> LesionPatch:
    """Crop (D, Y, X) donor slices to the lesion's bounding box (union over the slab) plus a margin."""
    if hu_slab.shape != lesion_slab.shape:
        raise ValueError("hu_slab and lesion_slab must have the same shape")
    rows, cols = np.nonzero(lesion_slab.any(axis=0))
    if rows.size == 0:
        raise ValueError("lesion_slab is empty")
    y0, y1 = max(rows.min() - margin_px, 0), min(rows.max() + margin_px + 1, hu_slab.shape[1])
    x0, x1 = max(cols.min() - margin_px, 0), min(cols.max() + margin_px + 1, hu_slab.shape[2])
    return LesionPatch(
        hu=hu_slab[:, y0:y1, x0:x1].astype(np.float32),
        mask=lesion_slab[:, y0:y1, x0:x1].astype(bool),
        centre=centre,
        donor_liver_hu=float(donor_liver_hu),
    )


def rescale_lesion(patch: LesionPatch, scale: float) -> LesionPatch:
    """Resample in-plane by ``scale`` = donor pixel spacing / recipient pixel spacing (keeps mm size).

    HU bilinear; the mask is resampled as a fraction and thresholded at 0.5.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if abs(scale - 1.0) < 1e-6:
        return patch
    hu = np.stack([ndimage.zoom(s, scale, order=1, mode="nearest") for s in patch.hu])
    mask = np.stack([ndimage.zoom(s.astype(np.float32), scale, order=1, mode="constant") > 0.5 for s in patch.mask])
    if not mask[patch.centre].any():  # a tiny lesion shrunk below one pixel: keep its centre pixel
        cy, cx = (np.array(mask.shape[1:]) - 1) // 2
        mask[patch.centre, cy, cx] = True
    return LesionPatch(hu.astype(np.float32), mask, patch.centre, patch.donor_liver_hu)


def support(mask: np.ndarray, feather_px: float) -> np.ndarray:
    """Pixels the transplant may change: where the feathered alpha of ``mask`` is > 0."""
    return feathered_alpha(mask, feather_px) > 0


def valid_placements(region: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """(Y, X) bool: top-left corners p where every footprint pixel (i, j) has region[p + (i, j)].

    Counts the footprint's pixels falling outside ``region`` with one FFT correlation
    (exact up to rounding), so large lesions on 512 x 512 slices stay cheap.
    """
    h, w = footprint.shape
    if not footprint.any():
        raise ValueError("footprint is empty")
    rows, cols = region.shape
    if h > rows or w > cols:
        return np.zeros(region.shape, dtype=bool)
    outside = (~region.astype(bool)).astype(np.float64)
    # full[p + (h - 1, w - 1)] = sum_ij footprint[i, j] * outside[p + (i, j)]
    full = signal.fftconvolve(outside, footprint[::-1, ::-1].astype(np.float64), mode="full")
    count = full[h - 1 : h - 1 + rows, w - 1 : w - 1 + cols]
    out = count < 0.5
    out[rows - h + 1 :, :] = False  # the footprint would leave the image
    out[:, cols - w + 1 :] = False
    return out


@dataclass
class Transplant:
    hu: np.ndarray  # (D, Y, X) recipient slab with the lesion blended in
    lesion_mask: np.ndarray  # (D, Y, X) bool, where the lesion (alpha == 1) now lies
    alpha: np.ndarray  # (D, Y, X) float32 in [0, 1]


def transplant_lesion(
    recipient_hu: np.ndarray,
    recipient_liver: np.ndarray,
    patch: LesionPatch,
    recipient_liver_hu: float,
    top_left: tuple[int, int],
    feather_px: float,
) -> Transplant:
    """Blend ``patch`` into the recipient slab (D, Y, X) at ``top_left`` (slab centre = patch centre).

    Raises ValueError when the centre slice's alpha support leaves the liver.
    """
    if recipient_hu.shape != recipient_liver.shape or recipient_hu.shape[0] != patch.hu.shape[0]:
        raise ValueError(f"recipient slab {recipient_hu.shape} must match liver and patch depth {patch.hu.shape}")
    d, h, w = patch.hu.shape
    y, x = top_left
    if y < 0 or x < 0 or y + h > recipient_hu.shape[1] or x + w > recipient_hu.shape[2]:
        raise ValueError(f"patch at {top_left} of size {(h, w)} leaves the image {recipient_hu.shape[1:]}")
    window = (slice(None), slice(y, y + h), slice(x, x + w))
    liver = recipient_liver[window].astype(bool)  # (D, h, w)
    alpha = np.stack([feathered_alpha(m, feather_px) for m in patch.mask])  # (D, h, w)
    if np.any((alpha[patch.centre] > 0) & ~liver[patch.centre]):
        raise ValueError("the lesion (with its feathered rim) does not fit inside the recipient's liver")
    alpha = alpha * liver  # neighbour slices: cut to that slice's liver
    relevelled = patch.hu - patch.donor_liver_hu + recipient_liver_hu  # keeps lesion-to-liver contrast
    out = recipient_hu.astype(np.float32).copy()
    out[window] = (1.0 - alpha) * out[window] + alpha * relevelled
    full_alpha = np.zeros(recipient_hu.shape, dtype=np.float32)
    full_alpha[window] = alpha
    lesion = np.zeros(recipient_hu.shape, dtype=bool)
    lesion[window] = patch.mask & liver
    return Transplant(out, lesion, full_alpha)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(squared distance from centre, disc mask) on a (Y, X) grid."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    return r2.astype(np.float64), r2 <= radius_px**2


def gaussian_blob(
    hu: np.ndarray, centre: tuple[float, float], sigma_px: float, amplitude_hu: float, truncate: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Add amplitude * exp(-r^2 / 2 sigma^2) within r <= truncate * sigma; (slice, changed region)."""
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    r2, region = _disc(hu.shape, centre, truncate * sigma_px)
    blob = amplitude_hu * np.exp(-r2 / (2 * sigma_px**2)) * region
    return (hu + blob).astype(np.float32), region


def disc_warp(
    hu: np.ndarray, centre: tuple[float, float], radius_px: float, max_shift_px: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Elastic warp inside a disc: a smooth random displacement field (Gaussian-filtered noise,
    sigma = radius / 3, scaled to ``max_shift_px`` at its largest) times the taper
    (1 - r^2 / R^2)^2, which is 0 on and outside the disc's edge; bilinear resampling."""
    if radius_px <= 0 or max_shift_px < 0:
        raise ValueError("radius_px must be > 0 and max_shift_px >= 0")
    rng = np.random.default_rng(seed)
    r2, region = _disc(hu.shape, centre, radius_px)
    taper = np.clip(1.0 - r2 / radius_px**2, 0.0, None) ** 2
    shifts = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.standard_normal(hu.shape), sigma=radius_px / 3.0)
        field *= max_shift_px / max(float(np.abs(field[region]).max()), 1e-12)
        shifts.append(field * taper)
    yy, xx = np.mgrid[: hu.shape[0], : hu.shape[1]].astype(np.float64)
    warped = ndimage.map_coordinates(hu.astype(np.float64), [yy + shifts[0], xx + shifts[1]], order=1, mode="nearest")
    out = np.where(region, warped, hu)  # outside the disc the displacement is exactly 0
    return out.astype(np.float32), region


def metal_disc(
    hu: np.ndarray, centre: tuple[float, float], radius_px: float, value_hu: float = METAL_HU, edge_px: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc (``value_hu``) with a linear edge ``edge_px`` wide and no streak artefacts."""
    if radius_px <= 0:
        raise ValueError(f"radius_px must be > 0, got {radius_px}")
    r2, _ = _disc(hu.shape, centre, radius_px)
    r = np.sqrt(r2)
    alpha = np.clip((radius_px + edge_px / 2 - r) / max(edge_px, 1e-6), 0.0, 1.0)
    region = alpha > 0
    return ((1 - alpha) * hu + alpha * value_hu).astype(np.float32), region

"""Does the liver go on past the mask's ends? The failure that the segmenter's own signals cannot see.

The gate's failures with no disagreement at all are whole slices that the mask leaves out at the liver's ends:
every test-time pass agrees on nothing there, so the disagreement is 0 and the risk with it. On the shipped
segmenter's three unseen IRCADb patients, 5 of the 11 zero-disagreement failures of ircadb-01 are its dome
(slices of 10-50 cm² left out); the folds' calibration sets held such slices too, and they are why no
conformal threshold was found for three of the four folds. The image still shows them: past the mask's last
slice, tissue of the liver's own density goes on under the end's footprint.

Rule (``continuation_cm2``), at each end of the mask along the slice normal:
- "liver-like" pixels are those whose smoothed HU lies within ``BAND_SDS`` robust SDs of the median of the mask
  near that end;
- the mask's own last ``ZONE_MM`` come first, inner slice first, from a footprint of the mask just inside them
  (a mask that fades out early still has its larger cross-sections there): on each, the largest liver-like
  region within the footprint and within ``NEAR_MM`` of the mask counts where the mask covers less than
  ``COVER_SHARE`` of it (the part left out beside the mask), and becomes the next footprint with the mask;
- then slice by slice past the end, from the mask over its last ``FOOTPRINT_MM`` and what the zone found beside
  its last slice, the largest liver-like region within the footprint continues there and becomes the next
  footprint. Within each walk a footprint only shrinks: the liver tapers towards its ends, and a region allowed
  to grow would walk into the heart above the dome or the bowel below the tip;
- the walk stops where less than ``MIN_CM2`` continues, or after ``MAX_MM``.
``open_ends`` names an end where ``OPEN_CM2`` or more is left out in all: the failure rule's area error on small
cross-sections (``models.risk.FailureRule``), so an end called open holds at least one failing slice's worth.

Measured on real ends (``workers.evaluation.liver_ends_eval``): the reference masks' own ends of ircadb-01, -07,
-17 and totalseg-s0009 continue by at most 1.7 cm² on a slice (none open); the same masks cut short by 6 or 10
slices at one end are all found open, on the right side, by 4 slices 5 of 7 ends; thinned to their inner 10 %
over their last 6 or 10 slices, 7 of 7. Work runs on a coarse in-plane grid of about ``GRID_MM`` (block means),
near the ends only.

Pure numpy/scipy: no files, no settings, no network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

GRID_MM = 2.5  # the segmenter's own in-plane grid (models.segmenter.default_grid)
FOOTPRINT_MM = 8.0  # 16 mm let a real dome of ircadb-01 continue by 7.7 cm² (closed ends must stay closed)
STATS_MM = 30.0  # the liver's density is taken from the mask within this distance of the end
BAND_SDS = 2.0
SD_FLOOR_HU = 10.0  # a very even liver would otherwise call noise foreign
# 2 cm² would end thin walks into neighbours of the liver's density (past ircadb-17's real dome, 2-3 cm² a
# slice, when its mask is cut short), but also the one real open end that a tumour at the dome narrows (the
# shipped segmenter on ircadb-17: 4 and 2 cm² past its end, 144 cm² missed on those slices): a false open end
# costs a radiologist's look, a missed one an auto-accepted mask without part of the liver
MIN_CM2 = 1.0
MAX_MM = 40.0
OPEN_CM2 = 5.0
# A mask that thins out before the liver does (the shipped segmenter on ircadb-01's caudal tip: 3 cm² a slice
# where the reference has 20-30) leaves its own last slices short, with nothing past them. Its last ZONE_MM are
# checked too, from a footprint just inside them, for liver-like tissue within NEAR_MM of the mask that the mask
# covers less than COVER_SHARE of. Chosen on the reference masks, cut and thinned (liver_ends_eval) and the
# shipped segmenter's ends: a 10 mm zone missed 10-slice thinning; with no NEAR_MM, or 10 mm, the heart over
# ircadb-17's real dome (34 cm² a slice, reference 14) or a thinned dome was called open.
ZONE_MM = 16.0
NEAR_MM = 15.0
COVER_SHARE = 0.5


def rule_record() -> dict[str, float]:
    """The rule's parameters (JSON): what a cached ``continuation_cm2`` was computed with."""
    names = ("GRID_MM", "FOOTPRINT_MM", "STATS_MM", "BAND_SDS", "SD_FLOOR_HU", "MIN_CM2", "MAX_MM", "OPEN_CM2",
             "ZONE_MM", "NEAR_MM", "COVER_SHARE")  # fmt: skip
    return {"version": 2.0, **{n.lower(): float(globals()[n]) for n in names}}  # 2: a zone slice without mask


@dataclass(frozen=True)
class OpenEnd:
    """An end of the mask past which liver-like tissue continues."""

    side: str  # "cranial" (the end at the higher position along the normal) or "caudal"
    slices: tuple[int, ...]  # series slice indices, from the innermost outwards
    area_cm2: float  # continuing in all

    def describe(self) -> str:
        first, last = min(self.slices), max(self.slices)
        return (f"the mask stops short of the liver's {self.side} end: {self.area_cm2:.0f} cm² of tissue of the "
                f"liver's density beside or past it are left out over slices {first}-{last}")  # fmt: skip


def _block_factor(spacing_mm: float) -> int:
    return max(1, int(round(GRID_MM / max(spacing_mm, 1e-6))))


def _coarse(planes: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """(z, Y, X) -> (z, Y // fy, X // fx) block means (the last partial blocks dropped)."""
    z, h, w = planes.shape
    h, w = (h // fy) * fy, (w // fx) * fx
    return planes[:, :h, :w].reshape(z, h // fy, fy, w // fx, fx).mean(axis=(2, 4))


def _largest(region: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(region)
    if n <= 1:
        return region
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _walk(hu: np.ndarray, mask: np.ndarray, end: int, step: int, spacing: tuple[float, float],
          positions: np.ndarray) -> dict[int, float]:  # fmt: skip
    """cm² of liver-like tissue the mask leaves out near ``end``, per slice index: on the mask's own last
    ``ZONE_MM`` (only where it covers less than ``COVER_SHARE`` of it) and past the end in direction ``step``."""
    z_all = len(mask)
    order = (np.arange(z_all) - end) * step  # <= 0: the mask's side of the end
    dist = np.abs(positions - positions[end])
    inside = np.flatnonzero((dist <= max(STATS_MM, ZONE_MM + FOOTPRINT_MM)) & (order <= 0))
    beyond = np.flatnonzero((dist <= MAX_MM) & (order > 0))
    fy, fx = _block_factor(spacing[0]), _block_factor(spacing[1])
    px_cm2 = fy * spacing[0] * fx * spacing[1] / 100.0
    rows = np.concatenate([inside, beyond])
    # the footprint lies inside the mask's box near the end: work there only (a block's width of margin)
    ys, xs = np.nonzero(mask[inside].any(0))
    if ys.size == 0:
        return {}
    y0, x0 = max(int(ys.min()) - fy, 0) // fy * fy, max(int(xs.min()) - fx, 0) // fx * fx
    y1, x1 = int(ys.max()) + 2 * fy, int(xs.max()) + 2 * fx
    image = ndimage.uniform_filter(_coarse(hu[rows, y0:y1, x0:x1].astype(np.float32), fy, fx), size=(1, 3, 3))
    liver = _coarse((mask[rows, y0:y1, x0:x1] != 0).astype(np.float32), fy, fx) >= 0.5
    d_in = dist[inside]
    near = image[: len(inside)][d_in <= STATS_MM][liver[: len(inside)][d_in <= STATS_MM]]
    if near.size == 0:
        return {}
    median = float(np.median(near))
    sd = max(1.4826 * float(np.median(np.abs(near - median))), SD_FLOOR_HU)
    band = np.abs(image - median) <= BAND_SDS * sd
    # the first footprint: the mask just inside the zone (a mask shorter than that: its last FOOTPRINT_MM)
    anchor = (d_in > ZONE_MM) & (d_in <= ZONE_MM + FOOTPRINT_MM)
    foot = liver[: len(inside)][anchor if anchor.any() else d_in <= FOOTPRINT_MM].any(0)
    out: dict[int, float] = {}
    beside = foot  # the mask that missed liver must lie near: this slice's, or the last one's on a slice without
    for i in np.flatnonzero(d_in <= ZONE_MM)[np.argsort(-d_in[d_in <= ZONE_MM], kind="stable")]:  # inner first
        own = liver[i]
        beside = own if own.any() else beside
        # missed liver lies beside the mask: within NEAR_MM of it (the heart over a dome lies farther off)
        nearby = ndimage.distance_transform_edt(~beside, sampling=(fy * spacing[0], fx * spacing[1])) <= NEAR_MM
        found = _largest(band[i] & foot & nearby)
        left_out = float((found & ~own).sum() * px_cm2)
        if left_out >= MIN_CM2 and own.sum() < COVER_SHARE * found.sum():
            out[int(inside[i])] = left_out
        foot = found | (own & foot)
    # past the end: the mask over its last FOOTPRINT_MM, and what the zone found beside its last slice
    foot |= liver[: len(inside)][d_in <= FOOTPRINT_MM].any(0)
    for i in np.argsort(np.abs(beyond - end)):  # outwards from the end
        found = _largest(band[len(inside) + i] & foot)
        area = float(found.sum() * px_cm2)
        if area < MIN_CM2:
            break
        out[int(beyond[i])] = area
        foot = found
    return out


def continuation_cm2(
    hu: np.ndarray, mask: np.ndarray, pixel_spacing_mm: tuple[float, float], positions_mm: ArrayLike
) -> np.ndarray:
    """(Z, Y, X) HU and liver mask on the series grid -> (Z,) cm² of liver-like tissue the mask leaves out at its
    ends: past them, and on its own last ``ZONE_MM`` where it covers less than ``COVER_SHARE`` of it (0
    elsewhere)."""
    hu, mask = np.asarray(hu), np.asarray(mask)  # no copy of the whole mask: only the ends' rows are read
    positions = np.asarray(positions_mm, dtype=np.float64)
    out = np.zeros(len(mask), dtype=np.float64)
    spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    for end, step, _ in mask_ends(mask.reshape(len(mask), -1).any(1), positions):
        for z, area in _walk(hu, mask, end, step, spacing, positions).items():
            out[z] = area
    return out


def mask_ends(present: ArrayLike, positions_mm: ArrayLike) -> list[tuple[int, int, str]]:
    """(end slice, step outwards, side) for the first and the last slice holding mask; side "cranial" for the end at
    the higher position along the normal. Empty without mask."""
    idx = np.flatnonzero(np.asarray(present))
    if idx.size == 0:
        return []
    pos = np.asarray(positions_mm, dtype=np.float64)
    lo, hi = int(idx[0]), int(idx[-1])
    return [(lo, -1, "cranial" if pos[lo] > pos[hi] else "caudal"),
            (hi, 1, "cranial" if pos[hi] >= pos[lo] else "caudal")]  # fmt: skip


def open_ends(continuation: np.ndarray, mask_present: ArrayLike, positions_mm: ArrayLike) -> list[OpenEnd]:
    """The ends near which ``OPEN_CM2`` or more is left out (``continuation``: ``continuation_cm2``'s output;
    ``mask_present``: (Z,) bool, the slices holding mask): on the mask's last ``ZONE_MM`` and past its end."""
    pos = np.asarray(positions_mm, dtype=np.float64)
    found = []
    for end, step, side in mask_ends(mask_present, pos):
        zone = [z for z in range(end, -1 if step > 0 else len(continuation), -step)
                if abs(pos[z] - pos[end]) <= ZONE_MM and continuation[z] > 0]  # fmt: skip
        run = []
        z = end + step
        while 0 <= z < len(continuation) and continuation[z] > 0:
            run.append(z)
            z += step
        slices = sorted(zone + run, key=lambda k: (k - end) * step)  # inner first, outwards
        total = float(continuation[slices].sum()) if slices else 0.0
        if total >= OPEN_CM2:
            found.append(OpenEnd(side, tuple(slices), total))
    return found

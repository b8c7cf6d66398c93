"""Segmentation-quality signals per slice, from the segmenter's probabilities alone (no reference mask).

The gate's second signal: where the segmenter is likely to fail, said by the segmenter itself. Inputs are
the probabilities of the base prediction and of a few test-time-augmented passes on the segmenter's own
grid (``workers.inference.quality`` runs them). Signals, each per slice:

- ``area_cm2``: the predicted cross-section (failures sit at the liver's ends, where it is small);
- ``end_distance_mm``: distance to the nearer end of the predicted liver along z (negative outside it),
  and ``fraction``: the cranio-caudal position within it (0 caudal end, 1 cranial end);
- ``tta_dice``: mean Dice between the base mask and each augmented pass's mask (disagreement under
  test-time augmentation; pairwise Dice between members is the strongest simple baseline in Zenk et al.,
  "Comparative benchmarking of failure detection methods in medical image segmentation", MedIA 2025);
- ``tta_area_cv``: coefficient of variation of the area across passes;
- ``uncertain_ratio``: the soft boundary (sum of 4 p (1 - p)) relative to the area (boundary confidence);
- ``components``: connected components of the slice's mask; ``removed_ratio``: the share of the slice's
  thresholded pixels outside the kept 3D liver (islands the largest-component rule dropped);
- ``area_jump``: how far the area departs from the mean of its neighbours (a cross-section that jumps);
- ``edge_dark_ratio`` (with the input image): the share of the slice's mask that is tissue darker than the
  series' own liver *and opens onto the mask's edge* (each dark region weighted by the share of its outline on
  the mask's outline). A leak across the liver's edge into a darker neighbour (ircadb-07's extrahepatic mass)
  leaves a dark region bounded by the mask's edge; a tumour inside the liver is ringed by liver.

Pure numpy/scipy: no files, no settings, no network.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.masks import IN_PLANE_CROSS

SIGNALS = (
    "area_cm2",
    "end_distance_mm",
    "fraction",
    "tta_dice",
    "tta_area_cv",
    "uncertain_ratio",
    "components",
    "removed_ratio",
    "area_jump",
    "edge_dark_ratio",
)
# Computed by the quality pass beside ``slice_signals``'s (workers.inference.quality): the distance of the slice's
# segmenter features to its training slices, and the liver-like tissue continuing past the written mask's ends
# (``models.liver_ends.continuation_cm2``, on the series grid).
EXTRA_SIGNALS = ("feature_distance", "continuation_cm2")
# edge_dark_ratio: darker than the liver's median by this many robust SDs (MAD x 1.4826, floored: a very even
# liver would otherwise call noise dark), in the segmenter's windowed units (0.05 = 10 HU at width 400)
DARK_SDS = 3.0
DARK_SD_FLOOR = 0.05
DARK_MIN_PX = 4  # 16 mm² at 2 mm: smaller dark specks are noise or partial volume


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The smallest box holding every True of ``mask`` grown by ``margin`` (clamped to the array), or None.

    Labelling and morphology run on this box: the liver is a small part of a (Z, 192, 192) grid, and a
    component or a dilation never reaches past the box (plus the structure's reach)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool -> the largest 6-connected 3D component (the liver is one organ)."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask)
    if box is None:
        return mask.copy()
    labels, n = ndimage.label(mask[box])
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    out = np.zeros_like(mask)
    out[box] = labels == int(np.argmax(sizes))
    return out


def components_per_slice(mask: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool -> (Z,) the number of 4-connected components of each slice, in one labelling.

    The structure joins nothing across slices, so each label lies in one slice: the same counts as labelling
    slice by slice, without a scipy call per slice."""
    counts = np.zeros(len(mask), dtype=np.float64)
    box = bounding_box(mask)
    if box is None:
        return counts
    inplane = np.zeros((3, 3, 3), dtype=bool)
    inplane[1] = ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(mask[box], structure=inplane)
    if n:
        first_z = [obj[0].start for obj in ndimage.find_objects(labels)]
        counts[box[0]] = np.bincount(first_z, minlength=box[0].stop - box[0].start)
    return counts


def keep_liver(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Probabilities with everything outside the largest component (dilated by one pixel) set to 0.

    The one-pixel margin keeps the boundary's interpolation onto the series grid unchanged."""
    keep = largest_component(prob > threshold)
    box = bounding_box(keep, margin=1)
    if box is None:
        return np.zeros_like(prob)
    grown = np.zeros_like(keep)
    grown[box] = ndimage.binary_dilation(keep[box], structure=ndimage.generate_binary_structure(2, 1)[None])
    return np.where(grown, prob, 0.0).astype(prob.dtype)


def _slice_dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool x2 -> (Z,) Dice, 1 where both are empty (agreement on nothing)."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    total = a.reshape(len(a), -1).sum(1) + b.reshape(len(b), -1).sum(1)
    return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)


def end_distance(present: np.ndarray, positions_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance to the nearer end of the liver's z-extent in mm, negative outside; fraction within it)."""
    pos = np.asarray(positions_mm, dtype=np.float64)
    idx = np.flatnonzero(present)
    if idx.size == 0:
        return np.full(len(pos), -1e3), np.full(len(pos), -1.0)
    lo, hi = pos[idx[0]], pos[idx[-1]]
    inside = np.minimum(pos - lo, hi - pos)  # >= 0 inside, < 0 outside
    fraction = (pos - lo) / max(hi - lo, 1e-6)
    return inside, fraction


def edge_dark_ratio(image: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(Z, S, S) image on the segmenter's grid (windowed), (Z, S, S) bool liver mask -> (Z,) the share of each
    slice's mask that is dark tissue opening onto the mask's edge.

    Dark: the image, smoothed over 3 x 3 pixels of the mask, below the median of the whole mask by ``DARK_SDS`` robust
    SDs. Each 4-connected dark region of a slice counts its area times the share of its outline pixels that
    lie on the mask's outline; regions under ``DARK_MIN_PX`` count nothing. One labelling over the mask's box
    (the in-plane structure joins nothing across slices)."""
    out = np.zeros(len(kept), dtype=np.float64)
    box = bounding_box(kept)
    if box is None:
        return out
    mask = kept[box]
    # smoothed inside the mask only (normalised convolution): the fat beyond the edge must not darken the rim
    inside = mask.astype(np.float32)
    summed = ndimage.uniform_filter(np.asarray(image[box], dtype=np.float32) * inside, size=(1, 3, 3))
    smooth = summed / np.maximum(ndimage.uniform_filter(inside, size=(1, 3, 3)), 1e-6)
    values = smooth[mask]
    median = float(np.median(values))
    sd = max(1.4826 * float(np.median(np.abs(values - median))), DARK_SD_FLOOR)
    dark = mask & (smooth < median - DARK_SDS * sd)
    labels, n = ndimage.label(dark, structure=IN_PLANE_CROSS)
    if n == 0:
        return out
    outline = dark & ~ndimage.binary_erosion(dark, structure=IN_PLANE_CROSS)
    on_edge = outline & ~ndimage.binary_erosion(mask, structure=IN_PLANE_CROSS)  # outside the box is not liver
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    perimeter = np.bincount(labels[outline], minlength=n + 1)[1:]
    edge = np.bincount(labels[on_edge], minlength=n + 1)[1:]
    weight = np.where(area >= DARK_MIN_PX, area * edge / np.maximum(perimeter, 1), 0.0)
    first_z = np.array([obj[0].start for obj in ndimage.find_objects(labels)])
    slice_area = mask.reshape(len(mask), -1).sum(1)
    per_slice = np.bincount(first_z, weights=weight, minlength=len(mask))
    out[box[0]] = per_slice / np.maximum(slice_area, 1)
    return out


def slice_signals(
    base: np.ndarray,
    members: list[np.ndarray],
    pixel_mm: float,
    positions_mm: np.ndarray,
    threshold: float = 0.5,
    *,
    image: np.ndarray,
) -> dict[str, np.ndarray]:
    """Quality signals per slice.

    base: (Z, S, S) probabilities of the plain pass; members: augmented passes, each (Z, S, S) and already
    mapped back onto the base grid; pixel_mm: the grid's pixel size; positions_mm: (Z,) along the normal;
    image: (Z, S, S) the plain pass's input (its centre slice, windowed) for ``edge_dark_ratio``.
    """
    raw = base > threshold
    kept = largest_component(raw)
    px_cm2 = (pixel_mm / 10.0) ** 2
    area_px = kept.reshape(len(kept), -1).sum(1).astype(np.float64)
    area = area_px * px_cm2
    member_masks = [largest_component(m > threshold) for m in members]
    tta_dice = np.mean([_slice_dice(kept, m) for m in member_masks], axis=0) if members else np.ones(len(kept))
    areas = np.stack([area] + [m.reshape(len(m), -1).sum(1) * px_cm2 for m in member_masks])  # (M + 1, Z)
    cv = areas.std(0) / np.maximum(areas.mean(0), 1.0)  # 1 cm² floor: an empty slice has no CV
    soft = (4.0 * base * (1.0 - base)).reshape(len(base), -1).sum(1) * px_cm2
    uncertain_ratio = soft / np.maximum(area, 1.0)
    components = components_per_slice(kept)
    raw_px = raw.reshape(len(raw), -1).sum(1)
    removed_ratio = (raw_px - area_px) / np.maximum(raw_px, 1)
    padded = np.pad(area, 1, mode="edge")
    neighbours = 0.5 * (padded[:-2] + padded[2:])
    area_jump = np.abs(area - neighbours) / np.maximum(np.maximum(area, neighbours), 1.0)
    dist, fraction = end_distance(area_px > 0, positions_mm)
    return {
        "area_cm2": area,
        "end_distance_mm": dist,
        "fraction": fraction,
        "tta_dice": tta_dice,
        "tta_area_cv": cv,
        "uncertain_ratio": uncertain_ratio,
        "components": components,
        "removed_ratio": removed_ratio,
        "area_jump": area_jump,
        "edge_dark_ratio": edge_dark_ratio(image, kept),
    }

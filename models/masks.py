"""Per-slice operations on a (Z, Y, X) stack of masks, done in one pass over the whole stack.

A 3-D labelling with an in-plane structuring element never joins two slices, so one call of ``ndimage.label``
gives every slice's components at once, numbered in raster order as slice-by-slice labelling numbers them
(slice after slice); a Python loop of one scipy call per slice costs several times more on a 300-slice series.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 4-connected in-plane only: components never cross slices
IN_PLANE_CROSS = np.array([[[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0]] * 3])


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool -> each slice with its holes filled: exactly ``ndimage.binary_fill_holes`` per slice (a hole
    is background not 4-connected to the slice's edge), in one labelling of the whole stack (about 10x faster:
    the per-slice fill is an iterated dilation)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return mask.copy()
    labels, n = ndimage.label(~mask, structure=IN_PLANE_CROSS)
    return _with_holes_filled(mask, labels, n)


def _with_holes_filled(mask: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """``mask`` (..., Y, X) with every background component of ``labels`` (numbered 1..n) that touches no
    in-plane edge added: the holes."""
    outside = np.zeros(n + 1, dtype=bool)  # per label: reaches an edge; label 0 is the mask itself
    for edge in (labels[..., 0, :], labels[..., -1, :], labels[..., :, 0], labels[..., :, -1]):
        outside[edge] = True
    outside[0] = True
    return mask | ~outside[labels]


CROSS_2D = IN_PLANE_CROSS[1]  # the same 4-connectivity, for one slice


def fill_holes_2d_boxed(mask: np.ndarray) -> np.ndarray:
    """``fill_holes_2d`` for an organ's mask that covers a small part of most slices: each slice labelled inside
    its own bounding box only, and slices without any mask skipped. The same result: a background pixel on the
    box's edge touches a row or column that holds no mask, so it reaches the slice's edge in the full slice
    too. On a liver of 300 slices (the patch scorer's grid) 3.6x faster than one labelling of the stack's
    common box, which spends most of its work on background around the liver's small caudal and cranial ends."""
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    rows_any, cols_any = np.any(mask, axis=2), np.any(mask, axis=1)  # (Z, Y), (Z, X)
    for z in np.flatnonzero(np.any(rows_any, axis=1)):
        rows, cols = np.flatnonzero(rows_any[z]), np.flatnonzero(cols_any[z])
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        box = mask[z, r0:r1, c0:c1]
        labels, n = ndimage.label(~box, structure=CROSS_2D)
        if n:
            out[z, r0:r1, c0:c1] = _with_holes_filled(box, labels, n)
    return out


def largest_component_2d(mask: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool -> each slice's largest 4-connected component (the first in raster order among equals, as
    ``np.argmax`` over a per-slice ``ndimage.label`` picks it); slices without any stay empty."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=IN_PLANE_CROSS)
    keep = np.zeros(n + 1, dtype=bool)
    if n == 0:
        return keep[labels]
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    last = labels.reshape(labels.shape[0], -1).max(1)  # labels are consecutive per slice: first..last
    first = 1
    for top in last:
        if top >= first:  # this slice holds labels first..top
            keep[first + int(np.argmax(sizes[first : top + 1]))] = True
            first = int(top) + 1
    return keep[labels]


def dilate_inplane_3x3(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_dilation`` by a 3 x 3 in-plane square (outside the image counts as background), as scipy's
    separable maximum filter: several times faster than the binary morphology."""
    return ndimage.maximum_filter(np.asarray(mask, dtype=np.uint8), size=(1, 3, 3), mode="constant", cval=0) > 0


def open_inplane_3x3(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_opening`` by a 3 x 3 in-plane square: a minimum filter (the image's border erodes, as
    ``binary_erosion``'s border value 0 has it), then the dilation above."""
    eroded = ndimage.minimum_filter(np.asarray(mask, dtype=np.uint8), size=(1, 3, 3), mode="constant", cval=0)
    return dilate_inplane_3x3(eroded)

"""``models.liver_ends``: liver-like tissue going on past the mask's ends, on a synthetic body (pure logic)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.liver_ends import OPEN_CM2, continuation_cm2, open_ends

SPACING = (1.0, 1.0)  # mm; blocks of 2 x 2 pixels (about GRID_MM)
STEP_MM = 2.0


def _body(z: int = 40, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HU, liver, positions): fat (-100 HU) in a body, a 'liver' (60 HU, noise 8) whose cross-section tapers
    to nothing at both ends of slices 8-31, lung (-850 HU) above the liver's dome."""
    rng = np.random.default_rng(seed)
    hu = np.full((z, size, size), -100.0) + rng.normal(0, 8, (z, size, size))
    yy, xx = np.mgrid[:size, :size]
    liver = np.zeros((z, size, size), dtype=bool)
    for k in range(8, 32):
        radius = 28 * np.sqrt(max(0.0, 1 - ((k - 19.5) / 12.5) ** 2))  # an ellipsoid along z
        liver[k] = (yy - 48) ** 2 + (xx - 40) ** 2 <= radius**2
    hu[32:] = -850.0 + rng.normal(0, 8, (z - 32, size, size))  # the lung above the dome
    hu[liver] = 60.0 + rng.normal(0, 8, int(liver.sum()))
    return hu.astype(np.float32), liver, np.arange(z) * STEP_MM


def test_a_whole_liver_has_closed_ends() -> None:
    hu, liver, pos = _body()
    beyond = continuation_cm2(hu, liver, SPACING, pos)
    assert beyond.max() == 0.0
    assert open_ends(beyond, liver.any((1, 2)), pos) == []


@pytest.mark.parametrize(("cut", "side"), [(slice(26, None), "cranial"), (slice(None, 14), "caudal")])
def test_a_mask_cut_short_is_open_on_that_side_with_the_slices(cut: slice, side: str) -> None:
    hu, liver, pos = _body()
    short = liver.copy()
    short[cut] = False
    beyond = continuation_cm2(hu, short, SPACING, pos)
    (end,) = open_ends(beyond, short.any((1, 2)), pos)
    missing = [k for k in range(len(liver))[cut] if liver[k].any()]
    assert end.side == side
    assert set(end.slices) <= set(missing) and len(end.slices) >= 3  # what continues, all of it real liver
    assert end.slices[0] == (missing[0] if side == "cranial" else missing[-1])  # outwards from the mask's end
    assert end.area_cm2 >= OPEN_CM2
    assert beyond[short.any((1, 2))].max() == 0.0  # the mask's own slices (whole cross-sections) carry nothing
    assert f"the liver's {side} end" in end.describe()


@pytest.mark.parametrize(("thinned", "side"), [(range(26, 32), "cranial"), (range(8, 14), "caudal")])
def test_a_mask_that_thins_out_before_the_liver_is_open_on_that_side(thinned: range, side: str) -> None:
    """The mask keeps its last slices but only a small core of each (a segmenter that fades out early): nothing
    lies past its end, yet most of those slices' liver is left out beside it."""
    hu, liver, pos = _body()
    thin = liver.copy()
    yy, xx = np.mgrid[: liver.shape[1], : liver.shape[2]]
    for k in thinned:
        thin[k] &= (yy - 48) ** 2 + (xx - 40) ** 2 <= 3**2
    beyond = continuation_cm2(hu, thin, SPACING, pos)
    (end,) = open_ends(beyond, thin.any((1, 2)), pos)
    assert end.side == side
    assert set(end.slices) & set(thinned)  # the thinned slices themselves are named
    left_out = float((liver & ~thin).sum()) * 0.01
    assert OPEN_CM2 <= end.area_cm2 <= left_out + 1.0  # no more than what was taken away (plus block rounding)


def test_a_slice_missing_inside_the_end_zone_is_liver_left_out_beside_the_mask() -> None:
    """A mask that skips one slice of the liver near its end (not a segmenter's largest 3D component, but any mask
    may come in): that slice's liver is measured from the mask beside it, not from a distance to nothing."""
    hu, liver, pos = _body()
    gap = liver.copy()
    gap[29] = False  # about 10 cm² of dome
    beyond = continuation_cm2(hu, gap, SPACING, pos)
    (end,) = open_ends(beyond, gap.any((1, 2)), pos)
    assert end.side == "cranial" and 29 in end.slices
    assert beyond[29] <= liver[29].sum() * 0.01 + 1.0


def test_a_mask_a_little_short_of_the_liver_all_round_stays_closed() -> None:
    """Under-segmenting by a pixel all round (each slice covers most of its liver) is not an open end."""
    hu, liver, pos = _body()
    eroded = np.stack([ndimage.binary_erosion(s) for s in liver])
    beyond = continuation_cm2(hu, eroded, SPACING, pos)
    assert open_ends(beyond, eroded.any((1, 2)), pos) == []


def test_tissue_of_another_density_or_beside_the_footprint_does_not_continue() -> None:
    hu, liver, pos = _body()
    hu[32:, 40:56, 60:90] = 60.0  # liver-density tissue above the dome, but off the liver's footprint
    hu[:8, 30:60, 20:60] = 300.0  # bright bone under the caudal tip: not the liver's density
    beyond = continuation_cm2(hu, liver, SPACING, pos)
    assert beyond.max() == 0.0


def test_the_footprint_only_shrinks() -> None:
    """Past a small tip, a large slab of liver density does not pull the walk outwards beyond the tip's size."""
    hu, liver, pos = _body()
    short = liver.copy()
    short[29:] = False  # cut where the dome is small
    hu[29:] = 60.0  # everything above is liver density: a region allowed to grow would take the whole slice
    beyond = continuation_cm2(hu, short, SPACING, pos)
    footprint_cm2 = short[pos >= pos[28] - 8.0].any(0).sum() * 0.01
    assert 0 < beyond.max() <= footprint_cm2 + 0.5


def test_an_empty_mask_or_an_end_at_the_volume_edge_has_nothing_beyond() -> None:
    hu, liver, pos = _body()
    assert continuation_cm2(hu, np.zeros_like(liver), SPACING, pos).max() == 0.0
    assert open_ends(np.zeros(len(pos)), np.zeros(len(pos), bool), pos) == []
    edge = liver.copy()
    edge[:8] = edge[8]  # the mask reaches the first slice: nothing lies past that end
    beyond = continuation_cm2(hu, edge, SPACING, pos)
    assert beyond.max() == 0.0
    # an image narrower than one block of the coarse grid: nothing to walk on, and no error
    tiny = np.zeros((5, 2, 2), np.float32)
    mask = np.zeros((5, 2, 2), bool)
    mask[2] = True
    assert continuation_cm2(tiny, mask, (0.5, 0.5), np.arange(5.0)).max() == 0.0

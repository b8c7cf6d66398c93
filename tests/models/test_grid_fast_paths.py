"""The liver grid's fast paths give exactly what the plain formulations give: the one-labelling hole fill and the
per-slice-box one against ``ndimage.binary_fill_holes`` slice by slice, the minimum-filter erosion against a min
pool, the deviation map smoothed where it varies against smoothing every slice, the in-plane Gaussian by banded
matrix products against scipy's filter, the in-place z interpolation against the written-out blend, the
centre-only grid (the deviation rule's) against the centre channel of the full one, the body position's largest
tissue component, holes filled, against the per-slice loop it replaces, and the numpy lower median against
torch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from models.body_position import BodyPositionConfig, body_masks
from models.masks import (
    dilate_inplane_3x3,
    fill_holes_2d,
    fill_holes_2d_boxed,
    largest_component_2d,
    open_inplane_3x3,
)
from models.patch_gan.grid import GridConfig, liver_grid, plane_at
from models.patch_gan.score import deviation_map, gaussian_inplane, scoring_region
from models.transforms import interpolate_along_z, lower_median


@pytest.mark.parametrize("seed", range(6))
def test_hole_fill_matches_scipy_slice_by_slice(seed: int) -> None:
    rng = np.random.default_rng(seed)
    noisy = rng.random((5, 37 + seed, 41)) > 0.5
    blobs = ndimage.binary_opening(rng.random((4, 48, 45)) > 0.4)
    ring = np.zeros((2, 20, 20), bool)
    ring[:, 4:16, 4:16], ring[:, 7:13, 7:13] = True, False  # a hole in the middle, and one open to the edge below
    ring[1, 10:, 9:11] = False
    organ = np.zeros((4, 40, 40), bool)  # a small organ per slice, one slice without it, one against the edge
    organ[0, 10:20, 12:25], organ[0, 14:16, 15:18] = True, False
    organ[2, 0:12, 30:40], organ[2, 4:6, 34:36] = True, False
    organ[3, 5:30, 5:30], organ[3, 10:20, 5:30] = True, False  # a notch open to the box's edge: not a hole
    for mask in (noisy, blobs, ring, organ, np.zeros((1, 3, 3), bool), np.ones((2, 4, 4), bool)):
        expected = np.stack([ndimage.binary_fill_holes(s) for s in mask])
        np.testing.assert_array_equal(fill_holes_2d(mask), expected)
        np.testing.assert_array_equal(fill_holes_2d_boxed(mask), expected)
    assert fill_holes_2d(ring)[0, 10, 10] and not fill_holes_2d(ring)[1, 10, 10]
    assert fill_holes_2d_boxed(organ)[0, 15, 16] and not fill_holes_2d_boxed(organ)[3, 15, 10]


@pytest.mark.parametrize("erosion_px", [1, 2, 3, 6, 10])
def test_erosion_matches_a_min_pool(erosion_px: int) -> None:
    liver = torch.as_tensor(np.random.default_rng(erosion_px).random((4, 52, 47)) > 0.08)
    liver[0] = True  # a full slice: the image's own border does not erode
    liver[2] = False  # a slice without liver
    k = 2 * erosion_px + 1
    expected = -F.max_pool2d(-liver[:, None].float(), k, 1, erosion_px)[:, 0] > 0.5
    got = scoring_region(liver, erosion_px)
    assert torch.equal(got, expected) and bool(got[0].all())


@pytest.mark.parametrize("gap", [False, True])
def test_deviation_map_matches_smoothing_every_slice(gap: bool) -> None:
    """One run of varied slices (smoothed as a view) and a run broken by a constant slice (gathered)."""
    rng = np.random.default_rng(3)
    images = torch.full((5, 3, 30, 28), -1.0)  # slices 0 and 4: outside the liver's extent, constant
    images[1:4] = torch.as_tensor(rng.normal(0, 0.1, (3, 3, 30, 28)), dtype=torch.float32)
    liver = torch.zeros(5, 30, 28, dtype=torch.bool)
    liver[1:4, 5:25, 6:20] = True
    if gap:
        images[2], liver[2] = -1.0, False
    centre = images[:, 1]
    med = centre[liver].median()
    mad = (centre[liver] - med).abs().median() * 1.4826
    expected = ndimage.gaussian_filter(((centre - med).abs() / mad).numpy(), sigma=(0, 2.0, 2.0))
    np.testing.assert_allclose(deviation_map(images, liver).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_z_interpolation_matches_the_blend() -> None:
    volume = torch.randn(9, 6, 5)
    positions = torch.arange(9, dtype=torch.float64) * 2.5
    query = torch.tensor([-3.0, 0.0, 1.1, 10.0, 19.9, 40.0], dtype=torch.float64)
    q = query.clamp(0.0, 20.0)
    upper = torch.searchsorted(positions, q).clamp(1, 8)
    t = ((q - positions[upper - 1]) / 2.5).clamp(0, 1)[:, None, None]
    expected = volume[upper - 1] * (1 - t) + volume[upper] * t
    torch.testing.assert_close(interpolate_along_z(volume, positions, query), expected.float(), atol=1e-6, rtol=0)
    as_int = interpolate_along_z(torch.arange(3)[:, None, None].expand(3, 2, 2), positions[:3], query[2:3])
    torch.testing.assert_close(as_int, torch.full((1, 2, 2), 1.1 / 2.5))


def test_the_centre_plane_is_the_interpolation_at_the_slices_themselves() -> None:
    volume = torch.randn(7, 5, 4)
    positions = torch.tensor([0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 17.5], dtype=torch.float64)  # one gap
    for query in (positions, positions[2:5], positions[[0, 6]]):
        got = plane_at(volume, positions, query)
        assert torch.equal(got, interpolate_along_z(volume, positions, query))  # bit for bit
    between = torch.tensor([1.0, 15.0], dtype=torch.float64)  # not at a slice: interpolated
    assert torch.equal(plane_at(volume, positions, between), interpolate_along_z(volume, positions, between))


@pytest.mark.parametrize("dz", [1.0, 2.5, 5.0])
def test_a_centre_only_grid_is_the_full_grids_centre_channel(dz: float) -> None:
    rng = np.random.default_rng(int(dz * 10))
    hu = rng.normal(60, 40, (24, 70, 64)).astype(np.float32)
    liver = np.zeros(hu.shape, bool)
    liver[5:19, 20:50, 15:45] = True
    liver[8, 30:35, 25:30] = False  # a hole
    positions = 100.0 + dz * np.arange(24)
    body = np.linspace(-1, 1, 24)
    full = liver_grid(hu, (0.8, 0.8), positions, liver, body, GridConfig())
    centre = liver_grid(hu, (0.8, 0.8), positions, liver, body, GridConfig(), centre_only=True)
    assert centre.images.shape[1] == 1 and full.images.shape[1] == 3
    assert torch.equal(centre.images[:, 0], full.images[:, 1])
    assert torch.equal(centre.liver, full.liver)
    assert torch.equal(centre.conditions.nan_to_num(9), full.conditions.nan_to_num(9))
    assert torch.equal(deviation_map(centre.images, centre.liver), deviation_map(full.images, full.liver))


GAUSSIAN_CASES = [((3, 40, 37), 2.0), ((2, 5, 4), 2.0), ((1, 64, 9), 1.3), ((2, 1, 30), 3.0)]


@pytest.mark.parametrize(("shape", "sigma"), GAUSSIAN_CASES)
def test_the_inplane_gaussian_is_scipys(shape: tuple[int, int, int], sigma: float) -> None:
    """Sizes below the kernel's radius too, where scipy's reflect edge folds more than once."""
    x = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    expected = ndimage.gaussian_filter(x, sigma=(0, sigma, sigma))
    np.testing.assert_allclose(gaussian_inplane(torch.as_tensor(x), sigma).numpy(), expected, rtol=0, atol=1e-6)


def largest_by_loop(mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, dtype=bool)
    for k, plane in enumerate(mask):
        labels, n = ndimage.label(plane)
        if n:
            sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
            out[k] = labels == (int(np.argmax(sizes)) + 1)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_the_largest_component_per_slice_and_the_body_mask_match_the_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    noisy = rng.random((6, 33, 29)) > 0.55
    noisy[2] = False  # a slice without any component
    ties = np.zeros((2, 12, 12), bool)
    ties[:, 1:4, 1:4], ties[:, 7:10, 7:10] = True, True  # two of the same size: the first in raster order wins
    for mask in (noisy, ties, np.zeros((3, 5, 5), bool), np.ones((1, 4, 4), bool)):
        np.testing.assert_array_equal(largest_component_2d(mask), largest_by_loop(mask))
    hu = rng.normal(-500, 500, (7, 40, 36)).astype(np.float32)
    hu[:, 8:32, 6:30] = 40.0  # a body
    hu[3:5, 15:22, 12:20] = -900.0  # with a lung-like hole
    config = BodyPositionConfig()
    expected = np.stack([ndimage.binary_fill_holes(m) for m in largest_by_loop(hu > config.tissue_hu)])
    np.testing.assert_array_equal(body_masks(hu, config), expected)


@pytest.mark.parametrize("at_edge", [False, True])
def test_the_grids_liver_and_median_match_the_plain_formulation(at_edge: bool) -> None:
    """Holes filled in the liver's tight box against the margined crop slice by slice; the median over the box
    against the whole volume's. A notch open at the box's edge is no hole; a liver at the image's edge too."""
    rng = np.random.default_rng(7)
    hu = rng.normal(60, 40, (12, 60, 58)).astype(np.float32)
    liver = np.zeros(hu.shape, bool)
    liver[3:9, 0 if at_edge else 15 : 40, 12:44] = True
    liver[4, 20:25, 20:26] = False  # a hole
    liver[5, 30:40, 30:34] = False  # a notch open to the box's lower edge: not a hole
    positions, body = 2.5 * np.arange(12), np.zeros(12)
    grid = liver_grid(hu, (0.9, 0.9), positions, liver, body, GridConfig())
    b = grid.box
    crop = liver[:, b.y0 : b.y1, b.x0 : b.x1]
    filled = np.stack([ndimage.binary_fill_holes(s) for s in crop]).astype(np.float32)
    plain = F.interpolate(torch.as_tensor(filled)[:, None], size=(b.height, b.width), mode="bilinear")[:, 0] >= 0.5
    assert torch.equal(grid.liver, plain)
    assert grid.liver_median_hu == float(torch.median(torch.as_tensor(hu)[torch.as_tensor(liver)]))


@pytest.mark.parametrize("seed", range(4))
def test_the_inplane_opening_and_dilation_are_scipys_binary_morphology(seed: int) -> None:
    square = np.ones((1, 3, 3), dtype=bool)
    mask = np.random.default_rng(seed).random((5, 23, 19)) > 0.3 + 0.1 * seed
    mask[0] = True  # a full slice: its border erodes
    np.testing.assert_array_equal(open_inplane_3x3(mask), ndimage.binary_opening(mask, structure=square))
    np.testing.assert_array_equal(dilate_inplane_3x3(mask), ndimage.binary_dilation(mask, structure=square))


@pytest.mark.parametrize("n", [1, 2, 7, 10, 1001])
def test_the_lower_median_is_torchs(n: int) -> None:
    """Odd and even counts (torch takes the lower middle value), through a mask and without one."""
    rng = np.random.default_rng(n)
    values = torch.as_tensor(rng.integers(-50, 50, size=(n, 3)).astype(np.float32))  # ties, as integer HU have
    where = torch.as_tensor(rng.random((n, 3)) > 0.3)
    where[0, 0] = True
    assert lower_median(values, where) == float(torch.median(values[where]))
    assert lower_median(values) == float(torch.median(values))
    with pytest.raises(ValueError, match="no values"):
        lower_median(values, torch.zeros_like(where))

"""The liver grid's fast paths give exactly what the plain formulations give: the one-labelling hole fill against
``ndimage.binary_fill_holes`` slice by slice, the minimum-filter erosion against a min pool, the deviation map
smoothed where it varies against smoothing every slice, and the in-place z
interpolation against the written-out blend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from models.patch_gan.grid import fill_holes_2d
from models.patch_gan.score import deviation_map, scoring_region
from models.transforms import interpolate_along_z


@pytest.mark.parametrize("seed", range(6))
def test_hole_fill_matches_scipy_slice_by_slice(seed: int) -> None:
    rng = np.random.default_rng(seed)
    noisy = rng.random((5, 37 + seed, 41)) > 0.5
    blobs = ndimage.binary_opening(rng.random((4, 48, 45)) > 0.4)
    ring = np.zeros((2, 20, 20), bool)
    ring[:, 4:16, 4:16], ring[:, 7:13, 7:13] = True, False  # a hole in the middle, and one open to the edge below
    ring[1, 10:, 9:11] = False
    for mask in (noisy, blobs, ring, np.zeros((1, 3, 3), bool), np.ones((2, 4, 4), bool)):
        expected = np.stack([ndimage.binary_fill_holes(s) for s in mask])
        np.testing.assert_array_equal(fill_holes_2d(mask), expected)
    assert fill_holes_2d(ring)[0, 10, 10] and not fill_holes_2d(ring)[1, 10, 10]


@pytest.mark.parametrize("erosion_px", [1, 2, 3, 6, 10])
def test_erosion_matches_a_min_pool(erosion_px: int) -> None:
    liver = torch.as_tensor(np.random.default_rng(erosion_px).random((4, 52, 47)) > 0.08)
    liver[0] = True  # a full slice: the image's own border does not erode
    liver[2] = False  # a slice without liver
    k = 2 * erosion_px + 1
    expected = -F.max_pool2d(-liver[:, None].float(), k, 1, erosion_px)[:, 0] > 0.5
    got = scoring_region(liver, erosion_px)
    assert torch.equal(got, expected) and bool(got[0].all())


def test_deviation_map_matches_smoothing_every_slice() -> None:
    rng = np.random.default_rng(3)
    images = torch.full((5, 3, 30, 28), -1.0)  # slices 0 and 4: outside the liver's extent, constant
    images[1:4] = torch.as_tensor(rng.normal(0, 0.1, (3, 3, 30, 28)), dtype=torch.float32)
    liver = torch.zeros(5, 30, 28, dtype=torch.bool)
    liver[1:4, 5:25, 6:20] = True
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

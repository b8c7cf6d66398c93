"""models.quality: the segmenter's own per-slice signals, on synthetic probability volumes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.quality import (
    SIGNALS,
    bounding_box,
    components_per_slice,
    edge_dark_ratio,
    keep_liver,
    largest_component,
    slice_signals,
)


def ellipsoid(z: int = 20, s: int = 48, radius: float = 15.0) -> np.ndarray:
    """(Z, S, S) probabilities: 0.95 inside an ellipsoid along z, 0.02 outside."""
    zz, yy, xx = np.meshgrid(np.linspace(-1.2, 1.2, z), np.arange(s) - s / 2, np.arange(s) - s / 2, indexing="ij")
    inside = (xx / radius) ** 2 + (yy / radius) ** 2 + zz**2 <= 1.0
    return np.where(inside, 0.95, 0.02).astype(np.float32)


def test_largest_component_drops_islands_and_keep_liver_zeroes_them() -> None:
    prob = ellipsoid()
    prob[10, 2:5, 2:5] = 0.9  # an island away from the organ
    kept = largest_component(prob > 0.5)
    assert not kept[10, 2:5, 2:5].any() and kept[10, 24, 24]
    cleaned = keep_liver(prob, 0.5)
    assert cleaned[10, 3, 3] == 0.0 and cleaned[10, 24, 24] == prob[10, 24, 24]


@pytest.mark.parametrize("seed", range(6))
def test_labelling_on_the_bounding_box_equals_labelling_the_whole_grid(seed: int) -> None:
    """The cropped fast paths against the plain scipy calls on the full array (random masks, islands at the
    borders included)."""
    rng = np.random.default_rng(seed)
    prob = (rng.random((9, 30, 26)) * rng.choice([0.6, 1.2])).astype(np.float32)
    prob[:, :, :3] = 0.0 if seed % 2 else prob[:, :, :3]  # some masks touch the border, some do not
    mask = prob > 0.5
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    expected = labels == int(np.argmax(sizes)) if n > 1 else mask
    np.testing.assert_array_equal(largest_component(mask), expected)
    dilated = ndimage.binary_dilation(expected, structure=ndimage.generate_binary_structure(2, 1)[None])
    np.testing.assert_array_equal(keep_liver(prob, 0.5), np.where(dilated, prob, 0.0))
    per_slice = [ndimage.label(s)[1] for s in mask]
    np.testing.assert_array_equal(components_per_slice(mask), per_slice)


def test_bounding_box_and_empty_masks() -> None:
    mask = np.zeros((4, 10, 12), dtype=bool)
    assert bounding_box(mask) is None
    np.testing.assert_array_equal(components_per_slice(mask), np.zeros(4))
    assert not largest_component(mask).any() and not keep_liver(mask.astype(np.float32), 0.5).any()
    mask[1, 2:4, 9:12] = True
    assert bounding_box(mask) == (slice(1, 2), slice(2, 4), slice(9, 12))
    assert bounding_box(mask, margin=1) == (slice(0, 3), slice(1, 5), slice(8, 12))  # clamped at the edge


def test_identical_members_agree_and_a_shifted_member_disagrees() -> None:
    prob, positions = ellipsoid(), np.arange(20) * 3.0
    same = slice_signals(prob, [prob.copy(), prob.copy()], 2.0, positions, image=prob)
    assert set(same) == set(SIGNALS)
    liver = same["area_cm2"] > 0
    assert np.allclose(same["tta_dice"], 1.0) and np.allclose(same["tta_area_cv"][liver], 0.0)
    shifted = slice_signals(prob, [np.roll(prob, 6, axis=2)], 2.0, positions, image=prob)
    assert (shifted["tta_dice"][liver] < 0.95).all()
    assert np.array_equal(shifted["area_cm2"], same["area_cm2"])  # the base mask's area, not the member's


def test_area_distance_fraction_and_islands_per_slice() -> None:
    prob, positions = ellipsoid(), np.arange(20) * 3.0
    prob[10, 2:5, 2:5] = 0.9  # 9 px dropped by the 3D rule
    s = slice_signals(prob, [], 2.0, positions, image=prob)
    present = np.flatnonzero(s["area_cm2"] > 0)
    lo, hi = present[0], present[-1]
    assert s["area_cm2"][10] == pytest.approx(((prob[10] > 0.5).sum() - 9) * 0.04)
    assert s["end_distance_mm"][lo] == 0.0 and s["end_distance_mm"][hi] == 0.0
    assert s["end_distance_mm"][10] == min(positions[10] - positions[lo], positions[hi] - positions[10])
    if lo > 0:
        assert s["end_distance_mm"][lo - 1] < 0  # outside the predicted liver
    assert s["fraction"][lo] == 0.0 and s["fraction"][hi] == 1.0
    assert s["removed_ratio"][10] > 0 and s["removed_ratio"][9] == 0
    assert s["components"][10] == 1  # counted after the island was dropped


def test_an_empty_prediction_has_no_liver_anywhere() -> None:
    s = slice_signals(np.zeros((5, 16, 16), np.float32), [], 2.0, np.arange(5.0), image=np.zeros((5, 16, 16)))
    assert (s["area_cm2"] == 0).all() and (s["end_distance_mm"] < 0).all() and (s["fraction"] < 0).all()


def test_edge_dark_ratio_sees_a_leak_across_the_edge_and_not_a_lesion_inside() -> None:
    """A liver (0.35, +-0.02 noise) in 6 slices; slice 1 holds a dark lesion (0.0) ringed by liver, slice 3
    a mask that runs on into a dark neighbour (the leak), slice 5 nothing dark."""
    rng = np.random.default_rng(0)
    image = np.full((6, 64, 64), -0.7) + rng.normal(0, 0.02, (6, 64, 64))  # fat around
    kept = np.zeros((6, 64, 64), dtype=bool)
    kept[:, 16:48, 12:44] = True
    image[kept] = 0.35 + rng.normal(0, 0.02, int(kept.sum()))
    image[1, 26:36, 22:32] = 0.0  # a lesion inside
    image[3, 16:48, 44:60] = 0.0  # a dark mass beside the liver ...
    kept[3, 16:48, 44:56] = True  # ... into which the mask leaks (12 of its 16 columns)
    ratio = edge_dark_ratio(image, kept)
    assert ratio[3] > 0.15  # the leaked area over the slice's mask (about 12 / 44 of it, the leak's outline
    # lies on the mask's edge on three sides)
    assert ratio[1] < 0.01 and ratio[5] == 0.0
    assert not edge_dark_ratio(image, np.zeros_like(kept)).any()

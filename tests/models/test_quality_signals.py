"""models.quality: the segmenter's own per-slice signals, on synthetic probability volumes."""

from __future__ import annotations

import numpy as np
import pytest

from models.quality import SIGNALS, keep_liver, largest_component, slice_signals


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


def test_identical_members_agree_and_a_shifted_member_disagrees() -> None:
    prob, positions = ellipsoid(), np.arange(20) * 3.0
    same = slice_signals(prob, [prob.copy(), prob.copy()], 2.0, positions)
    assert set(same) == set(SIGNALS)
    liver = same["area_cm2"] > 0
    assert np.allclose(same["tta_dice"], 1.0) and np.allclose(same["tta_area_cv"][liver], 0.0)
    shifted = slice_signals(prob, [np.roll(prob, 6, axis=2)], 2.0, positions)
    assert (shifted["tta_dice"][liver] < 0.95).all()
    assert np.array_equal(shifted["area_cm2"], same["area_cm2"])  # the base mask's area, not the member's


def test_area_distance_fraction_and_islands_per_slice() -> None:
    prob, positions = ellipsoid(), np.arange(20) * 3.0
    prob[10, 2:5, 2:5] = 0.9  # 9 px dropped by the 3D rule
    s = slice_signals(prob, [], 2.0, positions)
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
    s = slice_signals(np.zeros((5, 16, 16), np.float32), [], 2.0, np.arange(5.0))
    assert (s["area_cm2"] == 0).all() and (s["end_distance_mm"] < 0).all() and (s["fraction"] < 0).all()

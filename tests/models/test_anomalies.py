"""Lesion transplant and MOOD-style synthetic anomalies on small synthetic slices."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomalies import (
    LesionPatch,
    cut_lesion,
    diameter_bin,
    disc_warp,
    equivalent_diameter_mm,
    feathered_alpha,
    gaussian_blob,
    metal_disc,
    rescale_lesion,
    support,
    transplant_lesion,
    valid_placements,
)


def _disc_mask(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _donor(depth: int = 5) -> tuple[np.ndarray, np.ndarray, float]:
    """Liver at 110 HU with noise, a lesion 35 HU darker, radius 6 px on the centre slice."""
    rng = np.random.default_rng(0)
    hu = 110.0 + rng.normal(0, 5, (depth, 40, 40)).astype(np.float32)
    lesion = np.stack([_disc_mask((40, 40), (20, 20), 6 - abs(d - depth // 2)) for d in range(depth)])
    hu[lesion] -= 35.0
    return hu, lesion, 110.0


def _recipient(depth: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Liver at 60 HU (an ellipse), fat elsewhere."""
    liver = _disc_mask((80, 80), (40, 40), 30)[None].repeat(depth, 0)
    hu = np.where(liver, 60.0, -100.0).astype(np.float32)
    return hu, liver


@pytest.mark.parametrize(("radius", "spacing"), [(5.0, (1.0, 1.0)), (10.0, (0.7, 0.7)), (20.0, (0.5, 0.8))])
def test_equivalent_diameter_of_a_disc(radius: float, spacing: tuple[float, float]) -> None:
    mask = _disc_mask((64, 64), (32, 32), radius)
    expected = 2 * radius * np.sqrt(spacing[0] * spacing[1])
    assert equivalent_diameter_mm(mask, spacing) == pytest.approx(expected, rel=0.05)


def test_equivalent_diameter_rejects_3d_and_bins() -> None:
    with pytest.raises(ValueError, match="2-D"):
        equivalent_diameter_mm(np.ones((2, 3, 3), bool), (1.0, 1.0))
    assert [diameter_bin(d) for d in (3.0, 9.99, 10.0, 14.9, 15.0, 40.0)] == [
        "<10", "<10", "10-15", "10-15", ">=15", ">=15",
    ]  # fmt: skip


def test_feathered_alpha_is_bounded_one_on_mask_zero_far_away() -> None:
    mask = _disc_mask((40, 40), (20, 20), 5)
    alpha = feathered_alpha(mask, 3.0)
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert np.all(alpha[mask] == 1)
    far = ~_disc_mask((40, 40), (20, 20), 5 + 3 + 1)
    assert np.all(alpha[far] == 0)
    ring = ~mask & (alpha > 0)
    assert ring.any() and np.all(alpha[ring] < 1)


def test_transplant_stays_inside_recipient_liver_and_keeps_contrast() -> None:
    donor_hu, lesion, donor_liver = _donor()
    patch = cut_lesion(donor_hu, lesion, centre=2, donor_liver_hu=donor_liver, margin_px=4)
    rec_hu, rec_liver = _recipient()
    footprint = support(patch.mask[2], 3.0)
    corners = np.argwhere(valid_placements(rec_liver[2], footprint))
    assert corners.size
    for y, x in corners[:: max(1, len(corners) // 25)]:
        out = transplant_lesion(rec_hu, rec_liver, patch, 60.0, (int(y), int(x)), feather_px=3.0)
        changed = out.hu != rec_hu
        assert not np.any(changed & ~rec_liver), "the transplant changed pixels outside the liver"
        assert out.lesion_mask[2].sum() == patch.mask[2].sum(), "the lesion was cut on the centre slice"
        # lesion-to-liver contrast is kept exactly where alpha == 1
        window = out.hu[:, y : y + patch.hu.shape[1], x : x + patch.hu.shape[2]]
        kept = window[patch.mask] - 60.0
        np.testing.assert_allclose(kept, donor_hu[lesion] - donor_liver, atol=1e-4)


def test_transplant_blend_lies_between_recipient_and_relevelled_lesion() -> None:
    donor_hu, lesion, donor_liver = _donor()
    patch = cut_lesion(donor_hu, lesion, centre=2, donor_liver_hu=donor_liver, margin_px=4)
    rec_hu, rec_liver = _recipient()
    rec_hu = rec_hu + np.random.default_rng(1).normal(0, 8, rec_hu.shape).astype(np.float32)
    out = transplant_lesion(rec_hu, rec_liver, patch, 60.0, (30, 30), feather_px=3.0)
    h, w = patch.hu.shape[1:]
    new = patch.hu - donor_liver + 60.0
    old = rec_hu[:, 30 : 30 + h, 30 : 30 + w]
    got = out.hu[:, 30 : 30 + h, 30 : 30 + w]
    assert np.all(got >= np.minimum(old, new) - 1e-3) and np.all(got <= np.maximum(old, new) + 1e-3)
    assert out.alpha.min() >= 0 and out.alpha.max() <= 1


def test_transplant_refuses_a_placement_leaving_the_liver() -> None:
    donor_hu, lesion, donor_liver = _donor()
    patch = cut_lesion(donor_hu, lesion, centre=2, donor_liver_hu=donor_liver, margin_px=4)
    rec_hu, rec_liver = _recipient()
    assert not valid_placements(rec_liver[2], support(patch.mask[2], 3.0))[0, 0]
    with pytest.raises(ValueError, match="liver"):
        transplant_lesion(rec_hu, rec_liver, patch, 60.0, (0, 0), feather_px=3.0)


def test_rescale_keeps_physical_size() -> None:
    donor_hu, lesion, donor_liver = _donor()
    patch = cut_lesion(donor_hu, lesion, centre=2, donor_liver_hu=donor_liver, margin_px=4)
    scaled = rescale_lesion(patch, 0.57 / 0.743)  # donor 0.57 mm pixels onto a 0.743 mm grid
    before = equivalent_diameter_mm(patch.mask[2], (0.57, 0.57))
    after = equivalent_diameter_mm(scaled.mask[2], (0.743, 0.743))
    assert after == pytest.approx(before, rel=0.12)
    with pytest.raises(ValueError, match="centre"):
        LesionPatch(patch.hu, np.zeros_like(patch.mask), 2, 0.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda hu: gaussian_blob(hu, (30.0, 25.0), sigma_px=3.0, amplitude_hu=-80.0),
        lambda hu: gaussian_blob(hu, (30.0, 25.0), sigma_px=3.0, amplitude_hu=80.0),
        lambda hu: disc_warp(hu, (30.0, 25.0), radius_px=8.0, max_shift_px=2.0, seed=3),
        lambda hu: metal_disc(hu, (30.0, 25.0), radius_px=2.0),
    ],
    ids=["blob-dark", "blob-bright", "warp", "metal"],
)
def test_synthetic_anomaly_changes_only_its_region(make) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    hu = (60 + rng.normal(0, 20, (64, 64))).astype(np.float32)
    out, region = make(hu)
    assert out.shape == hu.shape and region.dtype == bool
    assert np.array_equal(out[~region], hu[~region])
    assert np.abs(out[region] - hu[region]).max() > 1.0, "the anomaly did not change its region"
    assert region.sum() < hu.size / 4


def test_metal_disc_reaches_3000_hu_in_its_core() -> None:
    hu = np.full((32, 32), 60.0, np.float32)
    out, region = metal_disc(hu, (16.0, 16.0), radius_px=3.0)
    assert out[16, 16] == pytest.approx(3000.0)
    assert out.max() <= 3000.0 and out.min() >= 60.0


def test_valid_placements_match_brute_force() -> None:
    rng = np.random.default_rng(2)
    region = _disc_mask((30, 30), (14, 16), 11) & (rng.random((30, 30)) > 0.03)
    footprint = _disc_mask((7, 5), (3, 2), 2.5)
    got = valid_placements(region, footprint)
    want = np.zeros_like(got)
    for y in range(30 - 7 + 1):
        for x in range(30 - 5 + 1):
            want[y, x] = bool(np.all(region[y : y + 7, x : x + 5][footprint]))
    assert np.array_equal(got, want)

"""Inputs the gate cannot judge, on synthetic volumes (the real-CT margins: test_input_checks_real.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.input_checks import Coverage, contrast_note, hu_doubt, liver_doubts

SPACING = (1.0, 1.0)


def _ct_like(n: int = 12, size: int = 96) -> np.ndarray:
    """Air outside an ellipse of soft tissue (40 HU) in a fat rim (-100 HU)."""
    yy, xx = np.mgrid[:size, :size]
    r = ((yy - size / 2) / (size * 0.4)) ** 2 + ((xx - size / 2) / (size * 0.45)) ** 2
    plane = np.where(r < 1, -100.0, -1000.0)
    plane[r < 0.7] = 40.0
    return np.repeat(plane[None], n, 0).astype(np.float32)


def test_a_ct_like_volume_passes() -> None:
    assert hu_doubt(_ct_like()) is None


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("uint8 window", lambda v: np.clip((v + 160) / 400 * 255, 0, 255)),
        ("0-2000", lambda v: np.clip(v + 1024, 0, 2000)),
        ("constant", lambda v: np.full_like(v, 40.0)),
        ("MR-like", lambda v: np.where(v > -500, 300 + (v + 200) * 2, 0.0)),
        ("ramp", lambda v: (np.arange(v.size, dtype=np.float32).reshape(v.shape) % 2000) - 1024),
    ],
)
def test_volumes_that_are_not_ct_in_hu_are_refused(name: str, make) -> None:  # type: ignore[no-untyped-def]
    doubt = hu_doubt(make(_ct_like()).astype(np.float32))
    assert doubt is not None and doubt.reason == "not_ct_hu", name
    assert "not CT in Hounsfield units" in doubt.detail and "HU" in doubt.detail


def _liver(n: int = 30, size: int = 96) -> np.ndarray:
    m = np.zeros((n, size, size), bool)
    m[5:25, 30:60, 20:50] = True  # 9 cm^2 per slice at 1 mm, 20 slices
    return m


def test_a_liver_inside_the_field_of_view_raises_no_doubt() -> None:
    unknown = Coverage(None, False, np.full(30, np.nan))
    assert liver_doubts(_liver(), _ct_like(30), SPACING, 2.0, unknown) == []


def test_a_liver_cut_at_the_image_edge_and_the_last_slice() -> None:
    liver = _liver()
    liver[10:20, 30:60, 0:20] = True  # reaches the first column on 10 slices, 30 mm of contact each
    liver[25:, 30:60, 20:50] = True  # and continues past the most cranial slice
    unknown = Coverage(None, False, np.full(30, np.nan))
    (doubt,) = liver_doubts(liver, _ct_like(30), SPACING, 2.0, unknown)
    assert doubt.reason == "liver_cut_by_fov"
    assert "first column on 10 slices (10-19)" in doubt.detail and "most cranial slice (index 29" in doubt.detail


def test_a_liver_touching_the_reconstruction_circle() -> None:
    hu = _ct_like(30)
    hu[:, :, :25] = -3024.0  # padding outside the reconstructed field of view, next to the liver at column 20+
    unknown = Coverage(None, False, np.full(30, np.nan))
    (doubt,) = liver_doubts(_liver(), hu, SPACING, 2.0, unknown)
    assert "edge of the reconstructed field of view on 20 slices (5-24)" in doubt.detail


def test_liver_far_above_the_lung_base_is_where_none_can_be() -> None:
    position = np.arange(30) * 10.0 - 50.0  # base at slice 5; slices 18-29 lie 130 mm or more above it
    liver = np.zeros((30, 96, 96), bool)
    liver[:, 20:70, 20:70] = True  # "liver" on every slice, as the chest series of issue #14
    (first, *_) = liver_doubts(liver, _ct_like(30), SPACING, 10.0, Coverage(5, True, position))
    assert first.reason == "no_liver_expected" and "120 mm or more above the lung base" in first.detail


def test_too_little_liver_where_the_coverage_holds_it() -> None:
    position = np.arange(30) * 10.0 - 200.0  # -200 .. +90 mm from the base
    liver = np.zeros((30, 96, 96), bool)
    liver[2:6, 40:50, 40:50] = True  # 1 cm^2 on four slices far below the base, nothing around it
    doubts = liver_doubts(liver, _ct_like(30), SPACING, 10.0, Coverage(20, True, position))
    assert [d.reason for d in doubts] == ["too_little_liver"]
    assert "within 20 mm of the lung base" in doubts[0].detail


def test_too_little_for_a_coverage_that_holds_the_whole_liver() -> None:
    position = np.arange(40) * 10.0 - 200.0  # -200 .. +190 mm: the whole liver's range
    liver = np.zeros((40, 96, 96), bool)
    liver[14:26, 30:60, 30:60] = True  # 9 cm^2 per slice on 12 slices of 10 mm
    liver[18:23, 20:70, 20:70] = True  # 25 cm^2 on the 5 slices around the base (enough there): 188 cm^3 in all
    doubts = liver_doubts(liver, _ct_like(40), SPACING, 10.0, Coverage(20, True, position))
    assert [d.reason for d in doubts] == ["too_little_liver"] and "holds the whole liver" in doubts[0].detail


def test_contrast_note_is_evidence() -> None:
    hu, liver = _ct_like(30), _liver()
    assert contrast_note(hu, liver, None) == "liver median 40 HU (no training range recorded)"
    assert "outside the training range 100..140 HU" in (contrast_note(hu, liver, [100, 140]) or "")
    assert contrast_note(hu, np.zeros_like(liver), [100, 140]) is None

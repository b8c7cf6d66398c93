"""Lung-base landmark on synthetic phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from models.body_position import BodyPositionConfig, find_body_position

SPACING = (2.0, 2.0)


def _phantom(
    lung_from_mm: float | None, gas: bool = True, n: int = 60, dz: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Body (40 HU) ellipse with two lungs (-850 HU) above ``lung_from_mm``, a bowel-gas
    bubble (-1000 HU, 15 mm tall) below it, air outside and FOV padding (-3024) in the corners."""
    z = np.arange(n) * dz
    yy, xx = np.mgrid[:160, :160] * 2.0  # mm
    body = ((yy - 160) / 120) ** 2 + ((xx - 160) / 150) ** 2 < 1
    vol = np.where(body, 40.0, -1000.0)[None].repeat(n, 0).astype(np.float32)
    lungs = (((yy - 150) / 60) ** 2 + ((xx - 100) / 40) ** 2 < 1) | (
        ((yy - 150) / 60) ** 2 + ((xx - 220) / 40) ** 2 < 1
    )
    gas_blob = ((yy - 200) / 15) ** 2 + ((xx - 160) / 15) ** 2 < 1
    for k, zk in enumerate(z):
        if lung_from_mm is not None and zk >= lung_from_mm:
            vol[k][lungs] = -850.0
        if gas and 30.0 <= zk < 45.0:
            vol[k][gas_blob] = -1000.0
    corner = np.hypot(yy - 160, xx - 160) > 165
    vol[:, corner] = -3024.0
    return vol, z


def test_lung_base_found_at_the_right_level() -> None:
    vol, z = _phantom(lung_from_mm=90.0)
    pos = find_body_position(vol, SPACING, z - 500.0)  # arbitrary scanner origin
    assert pos.landmark == "lung_base"
    assert pos.landmark_mm is not None and abs(pos.landmark_mm - (90.0 - 500.0)) <= 3.0
    assert abs(pos.position_mm[30] - 0.0) <= 3.0  # slice at 90 mm sits at the base
    assert pos.position_mm[-1] > 0 > pos.position_mm[0]
    assert pos.lung_area_cm2[:25].max() == 0  # the bowel gas bubble is not lung


def test_position_does_not_depend_on_origin_or_thickness() -> None:
    a_vol, a_z = _phantom(lung_from_mm=90.0, dz=3.0)
    a = find_body_position(a_vol, SPACING, a_z)
    b_vol, b_z = _phantom(lung_from_mm=90.0, n=120, dz=1.5)
    b = find_body_position(b_vol, SPACING, b_z + 1000.0)
    assert a.landmark_mm is not None and b.landmark_mm is not None
    assert abs((b.landmark_mm - 1000.0) - a.landmark_mm) <= 3.0


def test_no_lung_gives_unknown_position() -> None:
    vol, z = _phantom(lung_from_mm=None)
    pos = find_body_position(vol, SPACING, z)
    assert pos.landmark == "none" and pos.landmark_mm is None
    assert np.isnan(pos.position_mm).all() and np.isnan(pos.normalised).all()


def test_lung_down_to_first_slice_is_flagged() -> None:
    vol, z = _phantom(lung_from_mm=-10.0, gas=False)
    pos = find_body_position(vol, SPACING, z)
    assert pos.landmark == "lung_base_at_or_below_first_slice"
    assert pos.position_mm[0] == 0.0


def test_normalised_position_is_clipped() -> None:
    vol, z = _phantom(lung_from_mm=90.0)
    pos = find_body_position(vol, SPACING, z)
    assert np.all(np.abs(pos.normalised) <= 1.5)
    np.testing.assert_allclose(pos.normalised[40], pos.position_mm[40] / 300.0)


@pytest.mark.parametrize("bad", [{"work_pixel_mm": 0.0}, {"lung_hu": -1200.0}, {"base_area_cm2": 0.0}])
def test_bad_config_raises(bad: dict) -> None:
    with pytest.raises(ValueError):
        BodyPositionConfig(**bad)

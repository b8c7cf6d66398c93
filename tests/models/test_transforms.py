"""Preprocessing on synthetic volumes: window, padding mask, intensity shift, neighbours in mm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.transforms import (
    PreprocessConfig,
    body_view,
    interpolate_along_z,
    liver_view,
    preprocess_series,
    window,
)


def _phantom(n: int = 12, size: int = 128, spacing: float = 2.0) -> np.ndarray:
    """A water-like body (40 HU) disc of radius 100 mm in air, (n, size, size)."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2) * spacing
    plane = np.where(r < 100, 40.0, -1000.0).astype(np.float32)
    return np.repeat(plane[None], n, axis=0)


def test_window_maps_level_and_edges() -> None:
    hu = torch.tensor([50.0, -150.0, 250.0, -1000.0, 3000.0])
    out = window(hu, level=50, width=400)
    torch.testing.assert_close(out, torch.tensor([0.0, -1.0, 1.0, -1.0, 1.0]))


@pytest.mark.parametrize("size", [64, 128])
def test_output_shape_and_range(size: int) -> None:
    cfg = PreprocessConfig(size=size, pixel_mm=500 / size)
    out = preprocess_series(_phantom(), (2.0, 2.0), np.arange(12) * 2.5, cfg)
    assert out.images.shape == (12, 3, size, size) and out.valid.shape == (12, 1, size, size)
    assert out.images.min() >= -1 and out.images.max() <= 1


def test_padding_outside_field_of_view_is_masked_and_air() -> None:
    hu = _phantom()
    hu[:, :, :20] = -3024.0  # a 40 mm band outside the reconstruction circle
    cfg = PreprocessConfig(size=64, pixel_mm=4.0, normalise_intensity=False)
    out = preprocess_series(hu, (2.0, 2.0), np.arange(12) * 2.5, cfg)
    valid = out.valid[0, 0]
    # field is 256 mm wide at 4 mm/px, centred on the body: columns < 10 come from the padding
    assert not valid[:, :8].any() and valid[:, 12:60].all()
    assert (out.images[0, :, ~valid] == -1).all()


def test_intensity_shift_removes_a_global_offset() -> None:
    hu = _phantom()
    cfg = PreprocessConfig(size=64, pixel_mm=4.0)
    base = preprocess_series(hu, (2.0, 2.0), np.arange(12) * 2.5, cfg)
    body = hu > -500
    shifted = hu.copy()
    shifted[body] += 60.0  # e.g. a different contrast phase or scanner calibration
    moved = preprocess_series(shifted, (2.0, 2.0), np.arange(12) * 2.5, cfg)
    assert base.intensity_shift_hu == pytest.approx(10.0)
    assert moved.intensity_shift_hu == pytest.approx(-50.0)
    interior = base.images.abs() < 1e-3  # body pixels land on the window level (0) in both
    assert interior.sum() > 1000
    torch.testing.assert_close(moved.images[interior], base.images[interior], atol=1e-4, rtol=0)


def test_resampling_uses_mm_not_pixels() -> None:
    cfg = PreprocessConfig(size=64, pixel_mm=4.0, normalise_intensity=False)
    fine = preprocess_series(_phantom(4, 256, 1.0), (1.0, 1.0), np.arange(4) * 2.5, cfg)
    coarse = preprocess_series(_phantom(4, 128, 2.0), (2.0, 2.0), np.arange(4) * 2.5, cfg)
    body_fine = (fine.images[0, 1] > -0.9).sum()
    body_coarse = (coarse.images[0, 1] > -0.9).sum()
    expected = np.pi * 100**2 / 16  # disc area in 4 mm pixels
    assert abs(float(body_fine) - expected) / expected < 0.05
    assert abs(float(body_coarse) - float(body_fine)) / expected < 0.03


def test_neighbours_are_taken_at_fixed_mm_by_interpolation() -> None:
    # HU encodes the slice position: hu = 10 * z_mm inside the body; irregular spacing
    positions = np.array([0.0, 1.0, 2.5, 5.0, 6.0, 10.0, 12.0])
    hu = np.stack([np.full((64, 64), 10.0 * z, dtype=np.float32) for z in positions])
    cfg = PreprocessConfig(size=16, pixel_mm=4.0, neighbour_mm=3.0, level=60.0, width=240.0, normalise_intensity=False)
    out = preprocess_series(hu, (1.0, 1.0), positions, cfg, indices=[3, 4])
    centre = out.images[:, :, 8, 8]  # (2, 3): channels at z - 3, z, z + 3 mm
    expected_z = torch.tensor([[2.0, 5.0, 8.0], [3.0, 6.0, 9.0]])
    torch.testing.assert_close(centre, (10 * expected_z - 60.0) / 120.0, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.positions_mm, torch.tensor([5.0, 6.0]))


def test_interpolation_replicates_edges() -> None:
    vol = torch.arange(3, dtype=torch.float32)[:, None, None].expand(3, 2, 2)
    out = interpolate_along_z(vol, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([-5.0, 0.5, 9.0]))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 0.5, 2.0], dtype=out.dtype))


@pytest.mark.parametrize(
    "bad",
    [
        {"size": 60},
        {"pixel_mm": 0.0},
        {"width": 0.0},
        {"neighbour_mm": -1.0},
        {"padding_threshold_hu": -900.0},
    ],
)
def test_bad_preprocess_config_raises(bad: dict) -> None:
    with pytest.raises(ValueError):
        PreprocessConfig(**bad)


def test_unsorted_positions_raise() -> None:
    with pytest.raises(ValueError):
        preprocess_series(_phantom(3), (2.0, 2.0), [0.0, 2.0, 1.0], PreprocessConfig())


def test_view_centre_offset_moves_the_crop() -> None:
    hu = _phantom(3)  # disc centred at (128, 128) mm, 2 mm pixels
    hu[:, 20:30, 20:30] = 300.0  # a bright square 80 mm anterior and 80 mm to the patient's right
    cfg = PreprocessConfig(size=16, pixel_mm=2.0, centre_offset_mm=(-80.0, -80.0), normalise_intensity=False)
    out = preprocess_series(hu, (2.0, 2.0), [0.0, 2.5, 5.0], cfg)
    assert (out.images[1, 1, 5:11, 5:11] == 1.0).all()  # the square fills the view centre


@pytest.mark.parametrize(("view", "size", "field_mm"), [(body_view(64), 64, 400.0), (liver_view(), 128, 192.0)])
def test_view_presets(view: PreprocessConfig, size: int, field_mm: float) -> None:
    assert view.size == size and view.size * view.pixel_mm == pytest.approx(field_mm)
    assert PreprocessConfig.from_json(view.as_json()) == view

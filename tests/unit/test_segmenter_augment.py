"""The segmenter's training augmentation: liver-only contrast shift, field-of-view crop and the lung ring of the
liver's dome (pure tensors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.training.segmenter_data import AugmentConfig, augment, crop_field_of_view, shift_liver, surround_with_lung


def _square_liver(b: int = 8, s: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((b, 3, s, s), -0.2)  # (B, C, S, S) soft tissue
    y = torch.zeros(b, 1, s, s)
    y[:, :, 20:44, 16:40] = 1.0
    return x, y


def test_liver_shift_moves_the_liver_and_nothing_far_from_it() -> None:
    x, y = _square_liver()
    out = shift_liver(x, y, torch.full((8,), -0.3))
    assert torch.allclose(out[:, :, 32, 28], torch.full((8, 3), -0.5))  # inside, every channel
    assert torch.equal(out[:, :, 2, 2], x[:, :, 2, 2])  # far outside: untouched
    edge = out[0, 0, 20, 28]  # the mask's first row: softened, between the two values
    assert -0.5 < float(edge) < -0.2


def test_field_of_view_crop_blanks_image_and_mask_together() -> None:
    x, y = _square_liver(b=64)
    config = AugmentConfig(fov_crop_p=1.0, fov_crop=(0.5, 0.5))
    gen = torch.Generator().manual_seed(0)
    out_x, out_y = crop_field_of_view(x, y, config, gen)
    air = (out_x == -1.0).all(1, keepdim=True)  # (B, 1, S, S)
    assert torch.allclose(air.float().mean((1, 2, 3)), torch.full((64,), 0.75), atol=0.04)  # a 50 % x 50 % box
    assert not bool((out_y.bool() & air).any())  # no liver where the image is air
    assert bool(((y.bool() & ~air) == out_y.bool()).all())  # the liver inside the box is kept


def test_probability_zero_leaves_the_batch_alone() -> None:
    x, y = _square_liver()
    config = AugmentConfig(rotate_deg=0, scale=(1, 1), translate=0, intensity_shift=0, intensity_scale=(1, 1),
                           noise_std=0, liver_shift_p=0, fov_crop_p=0)  # fmt: skip
    out_x, out_y = augment(x, y, config, torch.Generator().manual_seed(1))
    assert torch.allclose(out_x, x, atol=1e-5) and torch.equal(out_y, y)


def _abdomen(b: int = 16, s: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """A body (soft tissue, air beyond a disc), a bright spine and a round liver; x (B, 3, S, S), y (B, 1, S, S)."""
    axis = torch.arange(s, dtype=torch.float32)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    body = (rows - s / 2) ** 2 + (cols - s / 2) ** 2 < (0.45 * s) ** 2
    liver = (rows - 40) ** 2 + (cols - 32) ** 2 < 14**2
    x = torch.where(body, torch.tensor(-0.2), torch.tensor(-1.0)).expand(b, 3, s, s).clone()
    x[:, :, 70:80, 44:52] = 0.9  # bone
    x = torch.where(liver, torch.tensor(0.3), x)
    y = liver.float().expand(b, 1, s, s).clone()
    y[-1] = 0.0  # a slice without liver
    return x, y


def test_lung_ring_puts_air_beside_the_liver_and_keeps_bone_wall_and_label_consistent() -> None:
    x, y = _abdomen()
    config = AugmentConfig(lung_p=1.0, lung_rim_px=(2.0, 2.0), lung_wall_px=(6.0, 6.0), lung_shrink_px=4.0)
    out_x, out_y = surround_with_lung(x, y, config, torch.Generator().manual_seed(0))
    air = (out_x == -1.0) & (x != -1.0)  # (B, 3, S, S): new air
    assert bool((air == air[:, :1]).all())  # the same region in every channel
    assert bool(air[:-1].flatten(1).any(1).all())  # every slice with liver got some lung
    assert not bool(air[-1].any()) and torch.equal(out_x[-1], x[-1])  # the slice without liver is untouched
    assert not bool(air[:, :, 70:80, 44:52].any())  # bone stays
    rows, cols = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    near_wall = ((rows - 48) ** 2 + (cols - 48) ** 2).sqrt() > 0.45 * 96 - 5  # a pixel of slack: a rasterised disc
    assert not bool(air[:, 0][:, near_wall].any())  # the chest wall stays tissue
    assert bool((out_y <= y).all()) and bool((out_y.bool() == (y.bool() & ~air[:, :1])).all())  # label: liver left
    assert bool(out_y[:-1].flatten(1).sum(1).gt(0.5 * y[:-1].flatten(1).sum(1)).all())  # the liver is not erased
    assert torch.equal(out_x[out_x != -1.0], x[out_x != -1.0])  # nothing else changes


def test_lung_ring_off_by_default() -> None:
    x, y = _abdomen()
    out_x, out_y = surround_with_lung(x, y, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(out_x, x) and torch.equal(out_y, y)


@pytest.mark.parametrize(
    "bad",
    [{"liver_shift_p": 1.5}, {"fov_crop_p": -0.1}, {"fov_crop": (0.0, 1.0)}, {"fov_crop": (0.9, 0.5)},
     {"liver_shift": (0.2, -0.2)}, {"lung_p": 2.0}, {"lung_rim_px": (3.0, 1.0)}, {"lung_shrink_px": -1.0}],
)  # fmt: skip
def test_bad_augment_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        AugmentConfig(**bad)


def test_dome_slices_are_the_upper_fifth_of_the_liver_along_the_normal() -> None:
    from workers.training.segmenter_training import dome_slices

    positions = np.arange(20, dtype=np.float64) * 2.5  # 0 ... 47.5 mm
    liver = (positions >= 10) & (positions <= 35)  # a 25 mm liver
    assert np.flatnonzero(dome_slices(positions, liver)).tolist() == [12, 13, 14]  # 30 ... 35 mm
    assert not dome_slices(positions, np.zeros(20, dtype=bool)).any()

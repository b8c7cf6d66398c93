"""The segmenter's training augmentation: liver-only contrast shift and field-of-view crop (pure tensors)."""

from __future__ import annotations

import pytest
import torch

from workers.training.segmenter_data import AugmentConfig, augment, crop_field_of_view, shift_liver


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


@pytest.mark.parametrize(
    "bad",
    [{"liver_shift_p": 1.5}, {"fov_crop_p": -0.1}, {"fov_crop": (0.0, 1.0)}, {"fov_crop": (0.9, 0.5)},
     {"liver_shift": (0.2, -0.2)}],
)  # fmt: skip
def test_bad_augment_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        AugmentConfig(**bad)

"""The faster preprocessing gives bit-identical images to the plain formulation of the same steps.

``_reference`` is the code ``preprocess_series`` had before it skipped the padding mask on
unpadded blocks and chunked the z interpolation; training caches made with either must match.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.transforms import (
    AIR_HU,
    PreprocessConfig,
    body_view,
    intensity_shift,
    interpolate_along_z,
    liver_view,
    padding_mask,
    preprocess_series,
    resample_inplane,
    tissue_centroid,
    window,
)


def _reference(hu: np.ndarray, spacing: tuple[float, float], positions: np.ndarray, config: PreprocessConfig):
    t = torch.as_tensor(hu, dtype=torch.float32)
    pos = torch.as_tensor(positions, dtype=torch.float64)
    shift = intensity_shift(t, config)
    cy, cx = tissue_centroid(t, spacing)
    centre = (cy + config.centre_offset_mm[0], cx + config.centre_offset_mm[1])
    pad = padding_mask(t, config.padding_threshold_hu)
    block = torch.where(pad, torch.full_like(t, AIR_HU), t + shift)
    small = resample_inplane(block, spacing, centre, config, fill=AIR_HU)
    small_out = resample_inplane(pad.float(), spacing, centre, config, fill=1.0)
    offsets = torch.tensor([-config.neighbour_mm, 0.0, config.neighbour_mm], dtype=torch.float64)
    stack = interpolate_along_z(small, pos, (pos[:, None] + offsets[None]).reshape(-1))
    stack = stack.reshape(len(pos), 3, config.size, config.size)
    valid = (interpolate_along_z(small_out, pos, pos) < 0.5)[:, None]
    return torch.where(valid, window(stack, config.level, config.width), torch.full_like(stack, -1.0)).float(), valid


def _phantom(n: int = 40, padded_from: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    body = ((yy - 50) / 38) ** 2 + ((xx - 46) / 44) ** 2 < 1
    hu = np.where(body, 45.0, -1000.0)[None].repeat(n, 0) + rng.normal(0, 20, (n, 96, 96))
    if padded_from is not None:  # a circular field of view from this slice on (scanners write -2048 outside)
        hu[padded_from:, (yy - 48) ** 2 + (xx - 48) ** 2 > 46**2] = -2048.0
    return hu.astype(np.float32)


@pytest.mark.parametrize("padded_from", [None, 0, 37])  # none, every block, only the last block padded
@pytest.mark.parametrize("config", [body_view(64), body_view(128), liver_view()], ids=["64", "128", "liver"])
def test_preprocess_is_bit_identical_to_the_plain_steps(padded_from: int | None, config: PreprocessConfig) -> None:
    hu, spacing, positions = _phantom(padded_from=padded_from), (4.2, 4.2), np.arange(40) * 2.5
    images, valid = _reference(hu, spacing, positions, config)
    out = preprocess_series(hu, spacing, positions, config)
    assert torch.equal(out.images, images) and torch.equal(out.valid, valid)
    assert out.images.dtype == torch.float32

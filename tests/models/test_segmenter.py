"""The liver segmenter network and its grid transforms (pure tensor code; tiny CPU networks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.segmenter import (
    GridBox,
    LiverSegmenter,
    SegmenterConfig,
    from_model_grid,
    grid_box,
    mask_on_series_grid,
    resample_to_box,
    to_model_grid,
)
from models.transforms import PreprocessConfig


def tiny(**kw: object) -> SegmenterConfig:
    base: dict[str, object] = {
        "preprocess": PreprocessConfig(size=16, pixel_mm=4.0, level=60.0, width=400.0, neighbour_mm=2.0),
        "channels": (4, 8),
        "strides": (2,),
        "head_channels": 2,
    }
    return SegmenterConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("context", [0, 1, 2])
@pytest.mark.parametrize("num_res_units", [0, 1])
def test_forward_shape(context: int, num_res_units: int) -> None:
    config = tiny(context=context, num_res_units=num_res_units)
    model = LiverSegmenter(config).eval()
    x = torch.randn(3, 2 * context + 1, 16, 16)  # (B, C, S, S)
    assert model(x).shape == (3, 1, 16, 16)


def test_head_bias_starts_at_the_prior() -> None:
    model = LiverSegmenter(tiny(prior=0.05))
    bias = model.head.bias
    assert bias is not None and torch.sigmoid(bias).item() == pytest.approx(0.05, rel=1e-4)


def test_forward_refuses_wrong_channels() -> None:
    with pytest.raises(ValueError, match=r"expected \(B, 3, S, S\)"):
        LiverSegmenter(tiny(context=1))(torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"context": -1}, "context must be >= 0"),
        ({"channels": (4,), "strides": ()}, "channels must hold >= 2"),
        ({"strides": (2, 2)}, "strides must hold"),
        ({"channels": (4, 8, 16, 32), "strides": (2, 4, 4)}, "divisible by prod"),
        ({"num_res_units": -1}, "num_res_units"),
        ({"norm": "group"}, "norm must be one of"),
        ({"act": "gelu"}, "act must be one of"),
        ({"dropout": 1.0}, "dropout"),
        ({"head_channels": 0}, "head_channels"),
        ({"prior": 0.0}, "prior"),
        ({"threshold": 1.0}, "threshold"),
    ],
)
def test_bad_hyper_parameters_raise(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**kw)


def test_config_json_round_trip() -> None:
    import json

    config = tiny(context=2)
    assert SegmenterConfig.from_json(json.loads(json.dumps(config.as_json()))) == config


def slab_volume(n: int = 6, size: int = 64) -> tuple[torch.Tensor, list[float]]:
    """Soft tissue whose HU grows with the slice index (to check channel order), in air at the borders."""
    hu = torch.full((n, size, size), -1000.0)
    for k in range(n):
        hu[k, 8:56, 8:56] = 20.0 * k
    return hu, [2.0 * k for k in range(n)]


def test_to_model_grid_channels_ascend_along_z() -> None:
    config = tiny(context=1, preprocess=PreprocessConfig(size=16, pixel_mm=4.0, neighbour_mm=2.0,
                                                         normalise_intensity=False))  # fmt: skip
    hu, positions = slab_volume()
    images, box = to_model_grid(hu, (1.0, 1.0), positions, config)
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.float32
    centre = images[3, :, 8, 8]  # (C,) at the image centre, slice 3: HU 40, 60, 80 -> windowed
    expected = (torch.tensor([40.0, 60.0, 80.0]) - 50.0) / 200.0
    assert torch.allclose(centre, expected, atol=1e-4)
    assert images[0, 0, 8, 8] == images[0, 1, 8, 8]  # edge replicates the first slice
    assert box.resampled_h == 16 and box.size == 16


def test_padding_values_become_air() -> None:
    hu, positions = slab_volume()
    hu[:, :4] = -3024.0  # outside the field of view
    images, _ = to_model_grid(hu, (1.0, 1.0), positions, tiny())
    assert float(images.min()) == -1.0 and torch.isfinite(images).all()


def test_grid_round_trip_recovers_a_mask() -> None:
    """Series mask -> model grid -> series grid: the same region, up to the model grid's resolution."""
    hu, positions = slab_volume(size=96)
    mask = torch.zeros_like(hu)
    mask[:, 30:70, 20:60] = 1.0
    config = tiny(preprocess=PreprocessConfig(size=48, pixel_mm=2.0))  # 96 mm field holds the 86 mm series
    box = grid_box(hu, (0.9, 0.9), config.preprocess)
    back = from_model_grid(resample_to_box(mask, box, fill=0.0), box) > 0.5
    inter = (back & (mask > 0)).sum()
    union = (back | (mask > 0)).sum()
    assert float(inter / union) > 0.9


@pytest.mark.parametrize(
    "box",
    [
        GridBox(64, 64, 20, 20, -3, -5, 16),
        GridBox(64, 48, 30, 22, 4, -2, 16),
        GridBox(40, 64, 12, 24, 0, 3, 16),
    ],
)
def test_fast_mask_equals_thresholded_probabilities(box: GridBox) -> None:
    gen = torch.Generator().manual_seed(0)
    prob = torch.zeros(5, 16, 16)
    prob[1:4, 4:11, 3:12] = torch.rand(3, 7, 9, generator=gen)  # slices 0 and 4 empty: the z-range is cropped
    prob[2] = 0.0  # a slice without liver inside that range
    prob[3, 0:2, 14:16] = 0.9  # a blob at the crop's corner
    expected = (from_model_grid(prob, box) > 0.5).to(torch.uint8)
    assert torch.equal(mask_on_series_grid(prob, box, 0.5), expected)


def test_model_grid_refuses_mismatched_positions() -> None:
    hu, _ = slab_volume()
    with pytest.raises(ValueError, match="Z == len"):
        to_model_grid(hu, (1.0, 1.0), np.arange(3.0), tiny())


def test_folding_the_batch_norms_keeps_the_function_and_the_features() -> None:
    """The inference model (``load_segmenter``) has its batch norms folded: same logits and bottleneck
    features as the model with them (fp32, float rounding), no norm left, and a training model is refused."""
    from models.segmenter import fold_batchnorm

    torch.manual_seed(0)
    config = SegmenterConfig(channels=(4, 8, 16), strides=(2, 2))
    model = LiverSegmenter(config)
    x = torch.randn(3, config.in_channels, 32, 32)
    model.train()
    for _ in range(3):  # running statistics away from (0, 1), so that folding has something to fold
        model(x * 3.0 + 1.0)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model)
    model.eval()
    with torch.inference_mode():
        logits, features = model.forward_with_features(x)
    assert fold_batchnorm(model) > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.inference_mode():
        folded_logits, folded_features = model.forward_with_features(x)
    torch.testing.assert_close(folded_logits, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(folded_features, features, rtol=1e-4, atol=1e-4)

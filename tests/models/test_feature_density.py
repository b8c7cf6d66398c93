"""The segmenter-feature distance of the gate (models.feature_density, LiverSegmenter.forward_with_features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.feature_density import FeatureDensity, fit_feature_density
from models.segmenter import LiverSegmenter, SegmenterConfig, bottleneck
from models.transforms import PreprocessConfig


def test_training_like_features_sit_near_one_and_outliers_far() -> None:
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.1, 16)
    train = rng.normal(size=(500, 16)) * scales + 5.0
    density = fit_feature_density(train, n_components=8)
    inside = density.distance(rng.normal(size=(200, 16)) * scales + 5.0)
    assert 0.7 < float(np.median(inside)) < 1.3
    far = density.distance(5.0 + 10 * scales[None, :])  # 10 sd along every direction
    assert float(far[0]) > 5 * float(np.median(inside))
    comps = np.asarray(density.components)
    np.testing.assert_allclose(comps @ comps.T, np.eye(8), atol=1e-9)


def test_json_round_trip_and_refusals() -> None:
    density = fit_feature_density(np.random.default_rng(1).normal(size=(20, 4)), n_components=3)
    assert FeatureDensity.from_json(density.as_json()) == density
    with pytest.raises(ValueError, match="N >= 3"):
        fit_feature_density(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="variances must be > 0"):
        FeatureDensity(mean=(0.0,), components=((1.0,),), variances=(0.0,))


def test_a_constant_direction_cannot_blow_the_distance_up() -> None:
    train = np.random.default_rng(2).normal(size=(100, 3))
    train[:, 2] = 1.0  # never varies in training
    density = fit_feature_density(train, n_components=3)
    moved = np.array([[0.0, 0.0, 1.01]])
    assert float(density.distance(moved)[0]) < 10.0


@pytest.mark.parametrize("strides", [(2,), (2, 2)])
def test_forward_with_features_returns_the_pooled_bottleneck_of_the_unets_own_forward(strides: tuple[int, ...]) -> None:
    channels = (4, 8, 16)[: len(strides) + 1]
    config = SegmenterConfig(preprocess=PreprocessConfig(size=16, pixel_mm=4.0), channels=channels,
                             strides=strides, head_channels=2, context=1)  # fmt: skip
    model = LiverSegmenter(config).eval()
    x = torch.randn(3, 3, 16, 16)
    captured: list[torch.Tensor] = []  # the reference: the bottleneck's output as the UNet's own forward sees it
    handle = bottleneck(model.unet).register_forward_hook(lambda _m, _i, out: captured.append(out))
    reference = model(x)
    handle.remove()
    logits, pooled = model.forward_with_features(x)
    assert logits.shape == (3, 1, 16, 16) and pooled.shape == (3, channels[-1])
    torch.testing.assert_close(logits, reference)
    torch.testing.assert_close(pooled, captured[0].mean(dim=(2, 3)))
    assert not bottleneck(model.unet)._forward_hooks

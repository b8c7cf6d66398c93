"""segment_with_quality: the feature-distance signal appears exactly when the segmenter carries a density."""

from __future__ import annotations

import numpy as np
import torch

from models.feature_density import fit_feature_density
from models.segmenter import LiverSegmenter, SegmenterConfig, to_model_grid
from models.transforms import PreprocessConfig
from workers.inference.quality import density_of, segment_with_quality
from workers.inference.segmenter import model_grid_probabilities_and_features


def test_feature_distance_with_a_density_only() -> None:
    torch.manual_seed(0)
    config = SegmenterConfig(preprocess=PreprocessConfig(size=32, pixel_mm=4.0), channels=(4, 8), strides=(2,),
                             head_channels=2, context=1, prior=0.5)  # fmt: skip
    model = LiverSegmenter(config).eval()
    hu = np.random.default_rng(0).normal(40, 30, size=(6, 64, 64)).astype(np.float32)
    positions = np.arange(6) * 3.0
    plain = segment_with_quality(model, hu, (2.0, 2.0), positions)
    assert "feature_distance" not in plain.signals
    images, _ = to_model_grid(hu, (2.0, 2.0), positions, config)
    _, feats = model_grid_probabilities_and_features(model, images)
    density = fit_feature_density(feats, n_components=4)
    assert density_of({"feature_density": density.as_json()}) == density and density_of({}) is None
    with_density = segment_with_quality(model, hu, (2.0, 2.0), positions, density=density)
    distance = with_density.signals["feature_distance"]
    assert distance.shape == (6,) and np.isfinite(distance).all()
    np.testing.assert_array_equal(with_density.mask, plain.mask)

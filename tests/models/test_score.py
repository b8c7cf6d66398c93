"""Score formula, heat-map, top-k and series aggregation on hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from models.scorer import aggregate_series, anomaly_map, reduce_map


def test_score_formula_on_hand_made_tensors() -> None:
    x = torch.zeros(1, 3, 8, 8)
    x_rec = torch.zeros(1, 3, 8, 8)
    x_rec[0, :, 0, 0] = 2.0  # one pixel off by 2 in all channels: pixel term = 4 / 64
    fx, fr = torch.zeros(1, 5, 4, 4), torch.zeros(1, 5, 4, 4)
    fr[0, 0] = 1.0  # one of 5 feature channels off by 1 everywhere: feature term = 1 / 5
    kappa = 0.5
    heat = anomaly_map(x, x_rec, fx, fr, kappa)
    assert heat.shape == (1, 1, 8, 8)
    expected = 4.0 / 64 + kappa * 1.0 / 5
    # A(x) = mean pixel residual + kappa * mean feature residual = mean of the heat-map
    assert float(reduce_map(heat)) == pytest.approx(expected, rel=1e-6)
    direct = ((x - x_rec) ** 2).mean() + kappa * ((fx - fr) ** 2).mean()
    assert float(reduce_map(heat)) == pytest.approx(float(direct), rel=1e-6)


def test_top_k_and_valid_mask() -> None:
    heat = torch.zeros(1, 1, 4, 4)
    heat[0, 0, 0, :2] = torch.tensor([8.0, 4.0])
    assert float(reduce_map(heat, top_k_fraction=2 / 16)) == pytest.approx(6.0)
    valid = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    valid[0, 0, 0, 1:3] = True  # pixels 4.0 and 0.0
    assert float(reduce_map(heat, valid)) == pytest.approx(2.0)
    assert float(reduce_map(heat, valid, top_k_fraction=1 / 16)) == pytest.approx(4.0)
    assert float(reduce_map(heat, valid, top_k_fraction=4 / 16)) == pytest.approx(2.0)  # k > valid pixels
    nothing = torch.zeros_like(valid)  # e.g. a slice with no liver in a liver-restricted score
    assert float(reduce_map(heat, nothing, top_k_fraction=1 / 16)) == 0.0 == float(reduce_map(heat, nothing))
    with pytest.raises(ValueError):
        reduce_map(heat, top_k_fraction=0.0)


def test_anomaly_map_shape_checks() -> None:
    with pytest.raises(ValueError):
        anomaly_map(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 7), torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_series_aggregation_is_mean_of_top_k() -> None:
    scores = torch.tensor([0.1, 5.0, 0.2, 3.0, 1.0])
    assert float(aggregate_series(scores, top_k=2)) == pytest.approx(4.0)
    assert float(aggregate_series(scores[:1], top_k=3)) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        aggregate_series(scores, top_k=0)

"""Threshold calibration at a target false-positive rate."""

from __future__ import annotations

import pytest
import torch

from models.scorer import (
    calibrate_by_position,
    calibrate_series_threshold,
    calibrate_threshold,
    false_positive_rate,
)


@pytest.mark.parametrize("fpr", [0.05, 0.01, 0.2])
def test_calibration_gives_requested_fpr_on_gaussian(fpr: float) -> None:
    gen = torch.Generator().manual_seed(1)
    calib = torch.randn(100_000, generator=gen)
    fresh = torch.randn(100_000, generator=gen)
    threshold = calibrate_threshold(calib, fpr)
    assert false_positive_rate(calib, threshold) <= fpr
    assert false_positive_rate(calib, threshold) == pytest.approx(fpr, abs=1e-4)
    assert false_positive_rate(fresh, threshold) == pytest.approx(fpr, abs=0.004)
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - fpr))
    assert threshold == pytest.approx(float(z), abs=0.03)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1])
def test_bad_fpr_raises(bad: float) -> None:
    with pytest.raises(ValueError):
        calibrate_threshold(torch.randn(10), bad)


def test_non_finite_scores_raise() -> None:
    with pytest.raises(ValueError):
        calibrate_threshold(torch.tensor([0.0, float("nan")]))


def test_calibration_by_position_falls_back_to_global() -> None:
    gen = torch.Generator().manual_seed(2)
    scores = torch.cat([torch.randn(5000, generator=gen), torch.randn(5000, generator=gen) + 3.0, torch.zeros(5)])
    positions = torch.cat([torch.full((5000,), -0.5), torch.full((5000,), 0.5), torch.full((5,), 2.0)])
    low, high, sparse = calibrate_by_position(scores, positions, bin_edges=[0.0, 1.0], target_fpr=0.05)
    assert low == pytest.approx(1.645, abs=0.08)
    assert high == pytest.approx(3.0 + 1.645, abs=0.08)
    assert sparse == calibrate_threshold(scores, 0.05)


def test_series_threshold_bootstrap() -> None:
    gen = torch.Generator().manual_seed(3)
    slices = torch.randn(5000, generator=gen)
    t = calibrate_series_threshold(slices, n_slices=50, top_k=3, target_fpr=0.05, n_boot=4000)
    # check on fresh simulated normal series of 50 independent slices
    fresh = torch.randn(4000, 50, generator=gen).topk(3, dim=1).values.mean(1)
    assert false_positive_rate(fresh, t) == pytest.approx(0.05, abs=0.015)
    assert t > calibrate_threshold(slices, 0.05)  # a top-3 mean sits above the slice threshold
    with pytest.raises(ValueError):
        calibrate_series_threshold(slices, n_slices=0)

"""models.risk: the failure definition, the fused risk model and its conformal threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models.risk import FEATURES, FailureRisk, FailureRule, crc_threshold, features, slice_failures
from workers.training.risk_fit import fit_failure_risk


def test_the_clinical_definition_by_cross_section_size() -> None:
    dice = np.array([0.85, 0.95, np.nan, 0.0, 0.5])
    ref = np.array([20.0, 20.0, 0.0, 0.0, 4.0])
    pred = np.array([20.0, 20.0, 0.0, 6.0, 8.0])
    # large slice below 0.9 fails; large slice at 0.95 does not; both empty does not; a 6 cm2 invented island
    # fails; a small slice with a bad Dice but 4 cm2 area error does not
    assert slice_failures(dice, ref, pred, FailureRule()).tolist() == [True, False, False, True, False]
    # the old definition: Dice < 0.9 wherever the reference holds liver
    assert slice_failures(dice, ref, pred, FailureRule(), clinical=False).tolist() == [True, False, False, False, True]


def random_signals(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"area_cm2": rng.uniform(0, 200, n), "end_distance_mm": rng.uniform(-10, 80, n),
            "fraction": rng.uniform(0, 1, n), "tta_dice": rng.uniform(0.5, 1, n), "tta_area_cv": rng.uniform(0, 1, n),
            "uncertain_ratio": rng.uniform(0, 2, n), "components": rng.integers(1, 4, n).astype(float),
            "removed_ratio": rng.uniform(0, 1, n), "area_jump": rng.uniform(0, 1, n),
            "anomaly": rng.normal(0, 1, n), "feature_distance": rng.uniform(0.5, 3.0, n)}  # fmt: skip


def test_the_fitted_model_predicts_what_scikit_learn_predicts_and_survives_json() -> None:
    rng = np.random.default_rng(0)
    sig = random_signals(400, rng)
    failed = rng.uniform(size=400) < 1 / (1 + np.exp(sig["end_distance_mm"] / 10 - 1))
    model = fit_failure_risk(sig, failed)
    x = features(sig, FEATURES)
    mean, scale = x.mean(0), x.std(0)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit((x - mean) / scale, failed)
    assert np.allclose(model.predict(sig), ref.predict_proba((x - mean) / scale)[:, 1], atol=1e-6)
    again = FailureRisk.from_json(model.as_json())
    assert np.array_equal(again.predict(sig), model.predict(sig))
    assert model.coef[FEATURES.index("end_distance")] < 0  # nearer the end: riskier


def test_a_model_needs_both_classes_and_known_features() -> None:
    sig = random_signals(10, np.random.default_rng(1))
    with pytest.raises(ValueError, match="failures and successes"):
        fit_failure_risk(sig, np.zeros(10, dtype=bool))
    with pytest.raises(ValueError, match="unknown features"):
        FailureRisk(features=("shoe_size",), mean=(0.0,), scale=(1.0,), coef=(1.0,), intercept=0.0)


def test_conformal_risk_control_keeps_the_joint_risk_under_alpha_on_exchangeable_data() -> None:
    """Averaged over many draws, the share of new slices both accepted and failed stays at or below alpha."""
    rng = np.random.default_rng(2)
    alpha, realised = 0.05, []
    for _ in range(300):
        risk = rng.uniform(size=400)
        failed = rng.uniform(size=400) < risk**3  # riskier slices fail more
        cal, test = slice(0, 200), slice(200, 400)
        t = crc_threshold(risk[cal], failed[cal], alpha)
        accepted = risk[test] <= t if t is not None else np.zeros(200, dtype=bool)
        realised.append(np.mean(accepted & failed[test]))
    assert np.mean(realised) <= alpha + 0.005
    assert np.mean(realised) > alpha / 3  # and it is not trivially conservative


def test_crc_threshold_edges() -> None:
    assert crc_threshold(np.array([]), np.array([], dtype=bool), 0.1) is None
    # (n R + 1) / (n + 1) <= alpha cannot hold for n = 5 and alpha = 0.1: accept nothing
    assert crc_threshold(np.arange(5.0), np.zeros(5, dtype=bool), 0.1) is None
    risk = np.arange(100.0)
    failed = risk >= 50
    t = crc_threshold(risk, failed, 0.05)  # 100 R + 1 <= 5.05: at most 4 failures accepted
    assert t == 53.0

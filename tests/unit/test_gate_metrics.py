"""The gate evaluation's metric functions on synthetic numbers (no data, no models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models.metrics import auroc as failure_auroc
from models.metrics import bootstrap_auroc_ci as block_bootstrap_auroc
from workers.evaluation.gate_eval import pair_metrics, thresholds_of
from workers.evaluation.gate_metrics import (
    GateConfig,
    accepted_rejected,
    aurc,
    coverage_at_risk,
    failed_slices,
    normal_slices,
    risk_coverage,
    threshold_for_acceptance,
)


def test_risk_coverage_by_hand() -> None:
    scores = np.array([0.4, 0.1, 0.3, 0.2])
    failed = np.array([True, False, False, True])  # by score: 0.1 ok, 0.2 fails, 0.3 ok, 0.4 fails
    c = risk_coverage(scores, failed)
    np.testing.assert_allclose(c["threshold"], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(c["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c["risk"], [0.0, 0.5, 1 / 3, 0.5])


def test_risk_coverage_ties_move_together() -> None:
    # a threshold accepts all tied scores or none: no point may split the tie
    c = risk_coverage(np.array([0.1, 0.2, 0.2, 0.3]), np.array([False, False, True, False]))
    np.testing.assert_allclose(c["coverage"], [0.25, 0.75, 1.0])
    np.testing.assert_allclose(c["risk"], [0.0, 1 / 3, 0.25])


def test_risk_coverage_points_match_accepting_at_their_threshold() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 200).astype(float)  # many ties
    failed = rng.random(200) < 0.3
    c = risk_coverage(scores, failed)
    for t, cov, risk in zip(c["threshold"], c["coverage"], c["risk"], strict=True):
        accepted = scores <= t
        assert cov == pytest.approx(accepted.mean())
        assert risk == pytest.approx(failed[accepted].mean())


def test_coverage_at_risk() -> None:
    c = risk_coverage(np.arange(10.0), np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 1], dtype=bool))
    # risk 0 up to 4 accepted, then 1/5, 1/6, 1/7, 1/8, 1/9 (<= 0.125) and 2/10
    assert coverage_at_risk(c, 0.0) == {"coverage": 0.4, "threshold": 3.0}
    assert coverage_at_risk(c, 0.125)["coverage"] == pytest.approx(0.9)
    none = coverage_at_risk(risk_coverage(np.arange(3.0), np.array([True, False, False])), 0.01)
    assert none == {"coverage": 0.0, "threshold": None}


def test_aurc_perfect_and_worst() -> None:
    failed = np.array([False, False, True, True])
    best = aurc(risk_coverage(np.array([1.0, 2.0, 3.0, 4.0]), failed))  # failures scored highest
    worst = aurc(risk_coverage(np.array([4.0, 3.0, 2.0, 1.0]), failed))
    assert best == pytest.approx(0.25 * (0 + 0 + 1 / 3 + 1 / 2))
    assert worst == pytest.approx(0.25 * (1 + 1 + 2 / 3 + 1 / 2))
    assert aurc(risk_coverage(np.zeros(0), np.zeros(0, dtype=bool))) is None


def test_failure_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 300).astype(float)
    failed = rng.random(300) < scores / 8
    assert failure_auroc(scores, failed) == pytest.approx(roc_auc_score(failed, scores))
    assert failure_auroc(np.array([1.0, 2.0, 3.0]), np.array([False, False, True])) == 1.0
    assert failure_auroc(np.array([1.0, 2.0, 3.0]), np.array([True, False, False])) == 0.0
    assert failure_auroc(np.array([1.0, 2.0]), np.array([False, False])) is None


def test_accepted_rejected_split_at_threshold() -> None:
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    dice = np.array([0.95, 0.92, 0.80, 0.40])
    failed = dice < 0.9
    out = accepted_rejected(scores, dice, failed, threshold=0.5)  # score == threshold is accepted (route: > flags)
    assert out["coverage"] == 0.75
    assert out["accepted"]["n"] == 3 and out["accepted"]["failures"] == 1
    assert out["accepted"]["dice_median"] == pytest.approx(0.92)
    assert out["accepted"]["failure_rate"] == pytest.approx(1 / 3)
    assert out["rejected"] == {"n": 1, "dice_mean": 0.4, "dice_median": 0.4, "failures": 1, "failure_rate": 1.0}
    empty = accepted_rejected(scores, dice, failed, threshold=0.0)["accepted"]
    assert empty["n"] == 0 and empty["dice_mean"] is None and empty["failure_rate"] is None


def test_failed_slices_only_where_liver() -> None:
    dice = np.array([np.nan, 0.5, 0.95, np.nan, 0.89])
    liver = np.array([False, True, True, True, True])  # slice 3: liver, nothing predicted -> Dice 0
    np.testing.assert_array_equal(failed_slices(dice, liver, 0.9), [False, True, False, True, True])


def test_normal_slices_keep_a_gap_from_lesions() -> None:
    liver = np.ones(12, dtype=bool)
    liver[0] = False
    lesion = np.zeros(12, dtype=bool)
    lesion[6] = True
    np.testing.assert_array_equal(np.flatnonzero(normal_slices(liver, lesion, 2)), [1, 2, 3, 9, 10, 11])


def test_threshold_for_acceptance() -> None:
    normal = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    t = threshold_for_acceptance(normal, 0.7)  # needs 4 of 5 accepted
    assert t == 4.0 and np.mean(normal <= t) >= 0.7
    assert threshold_for_acceptance(np.zeros(0), 0.7) is None


def test_block_bootstrap_interval() -> None:
    rng = np.random.default_rng(2)
    failed = rng.random(400) < 0.3
    scores = failed + rng.normal(0, 0.8, 400)
    ci = block_bootstrap_auroc(scores, failed, np.arange(400) // 8, n_boot=200)
    point = failure_auroc(scores, failed)
    assert ci is not None and point is not None and ci[0] < point < ci[1]
    assert block_bootstrap_auroc(scores, np.zeros(400, dtype=bool), np.arange(400) // 8, n_boot=50) is None


def _pairs(base_dice: list[float], mod_dice: list[float], base_score: list[float], mod_score: list[float]) -> dict:
    n = len(base_dice)
    return {
        "base_dice": np.array(base_dice),
        "mod_dice": np.array(mod_dice),
        "base_score": np.array(base_score),
        "mod_score": np.array(mod_score),
        "bin": np.array(["<10", ">=15"] * (n // 2)),
        "tumour": np.arange(n) % 2,
        "lesion_outside_liver_pixels": 0,
        "parity": {},
    }


def test_pair_failures_need_the_lesion() -> None:
    cfg = GateConfig(n_boot=20)
    p = _pairs(
        base_dice=[0.95, 0.85, 0.97, 0.96],  # pair 1 already fails without the lesion
        mod_dice=[0.88, 0.83, 0.91, 0.955],  # pair 0: fails with; pair 2: drop 0.06 >= margin; pair 3: fine
        base_score=[1.0, 1.0, 1.0, 1.0],
        mod_score=[3.0, 1.1, 2.0, 1.2],
    )
    m = pair_metrics(p, threshold=1.5, cfg=cfg)
    assert (m["base_failures"], m["mod_failures"], m["lesion_failures"]) == (1, 2, 2)
    assert m["auroc_score_change_for_lesion_failure"] == 1.0  # the two lesion failures rose most
    assert m["gate"]["lesion_failures_rejected"] == 1.0
    assert m["gate"]["mod_accepted"] == 0.5 and m["gate"]["failures_among_accepted_mod"] == 1
    assert list(m["by_diameter"]) == ["<10", ">=15"]


def test_pairs_without_failures_report_no_auroc() -> None:
    p = _pairs([0.95, 0.96], [0.95, 0.955], [1.0, 1.0], [2.0, 0.5])
    m = pair_metrics(p, threshold=1.5, cfg=GateConfig(n_boot=20))
    assert m["lesion_failures"] == 0
    assert m["auroc_score_change_for_lesion_failure"] is None and m["auroc_score_change_ci95"] is None
    assert m["gate"]["lesion_failures_rejected"] is None


def test_uncalibrated_scorer_is_refused() -> None:
    assert thresholds_of({"calibration": {"threshold": 1.5, "series_threshold": 2.0}}, Path("s.pt")) == (1.5, 2.0)
    assert thresholds_of({"calibration": {"threshold": 1.5}}, Path("s.pt")) == (1.5, None)
    with pytest.raises(ValueError, match="uncalibrated"):
        thresholds_of({}, Path("latest.pt"))

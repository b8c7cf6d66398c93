"""models.risk: the failure definition, the fused risk model and its conformal threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models.risk import FEATURES, FailureRisk, FailureRule, crc_threshold, features, slice_failures, union_risk
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
            "anomaly": rng.normal(0, 1, n), "feature_distance": rng.uniform(0.5, 3.0, n),
            "edge_dark_ratio": rng.uniform(0, 0.5, n),
            "continuation_cm2": np.where(rng.uniform(size=n) < 0.2, rng.uniform(1, 20, n), 0.0)}  # fmt: skip


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


def patient_table(seed: int, offset: float) -> dict[str, np.ndarray]:
    """One synthetic patient: failures follow the TTA disagreement; the feature distance is this patient's own
    level (``offset``) plus noise: it tells patients apart and says nothing about failure within one."""
    rng = np.random.default_rng(seed)
    sig = random_signals(200, rng)
    sig["feature_distance"] = np.exp(offset + 0.05 * rng.normal(size=200)) - 1
    failed = rng.uniform(size=200) < 1 / (1 + np.exp(-12 * ((1 - sig["tta_dice"]) - 0.25)))
    table = {f"signal_{k}": v for k, v in sig.items()}
    area = np.full(200, 50.0)
    return {**table, "dice": np.where(failed, 0.8, 0.95), "ref_area_cm2": area, "pred_area_cm2": area}


def test_the_gate_fit_keeps_what_transfers_across_patients() -> None:
    """Three training patients whose failure rates rise with their feature-distance level. The fit whose L1
    strength is chosen patient by patient keeps the signal that works within a patient, shrinks the noise to
    about nothing, and ranks a new patient (far outside the training levels) at least as well as the plain fit
    (measured: 0.894 against 0.887)."""
    from models.metrics import auroc
    from workers.training.risk_fit import C_GRID, choose_strength, fit_across_patients, judged, pool, signals_of

    rule = FailureRule()
    tables = {f"p{i}": patient_table(i, offset) for i, offset in enumerate((0.2, 0.6, 1.0))}
    for i, t in enumerate(tables.values()):  # patient i fails more often in proportion to its level
        extra = np.random.default_rng(10 + i).uniform(size=200) < 0.25 * i
        t["dice"] = np.where(extra, 0.8, t["dice"])
    assert choose_strength(tables, rule) in C_GRID
    gate = fit_across_patients(tables, rule)
    assert gate.fitted_on["penalty"] == "l1"
    assert gate.coef[FEATURES.index("tta_disagreement")] > 0
    plain = fit_failure_risk(*pool(tables, rule))
    new = patient_table(7, 2.0)
    failed = new["dice"] < 0.9
    keep = judged(new)
    assert auroc(gate.predict(signals_of(new, keep)), failed) >= auroc(plain.predict(signals_of(new, keep)), failed)
    noise = [FEATURES.index(n) for n in ("anomaly", "removed_ratio", "area_jump")]
    assert sum(abs(gate.coef[j]) for j in noise) < sum(abs(plain.coef[j]) for j in noise)


def test_with_one_patient_the_gate_fit_falls_back_to_the_plain_fit() -> None:
    from workers.training.risk_fit import fit_across_patients, pool

    tables = {"only": patient_table(0, 0.5)}
    gate = fit_across_patients(tables, FailureRule())
    plain = fit_failure_risk(*pool(tables, FailureRule()))
    assert gate.fitted_on["penalty"] == "l2" and np.allclose(gate.coef, plain.coef)


def test_the_disagreement_risk_is_the_tta_disagreement_with_nothing_fitted() -> None:
    from models.risk import disagreement_risk
    from workers.training.risk_fit import fit_on, judged, out_of_case_risk, signals_of

    sig = random_signals(50, np.random.default_rng(3))
    risk = disagreement_risk()
    assert np.allclose(risk.predict(sig), 1.0 - sig["tta_dice"])
    again = FailureRisk.from_json(risk.as_json())
    assert again.kind == "disagreement" and np.array_equal(again.predict(sig), risk.predict(sig))
    old = {k: v for k, v in risk.as_json().items() if k != "kind"}  # saved before kinds existed: logistic
    assert FailureRisk.from_json({**old, "features": ["anomaly"]}).kind == "logistic"
    tables = {f"p{i}": patient_table(i, 0.5) for i in range(3)}
    assert fit_on(tables, FailureRule()) == risk  # the default fit
    cal, _ = out_of_case_risk(tables, FailureRule())
    expected = np.concatenate([1.0 - signals_of(t, judged(t))["tta_dice"] for t in tables.values()])
    assert np.allclose(cal, expected)


def test_the_union_risk_is_the_larger_share_in_doubt_with_nothing_fitted() -> None:
    from models.risk import union_risk
    from workers.training.risk_fit import fit_on

    sig = random_signals(50, np.random.default_rng(4))
    risk = union_risk()
    assert np.allclose(risk.predict(sig), np.maximum(1.0 - sig["tta_dice"], sig["edge_dark_ratio"]))
    assert FailureRisk.from_json(risk.as_json()) == risk
    tables = {f"p{i}": patient_table(i, 0.5) for i in range(3)}
    assert fit_on(tables, FailureRule(), how="union") == risk
    no_edge = {k: v for k, v in sig.items() if k != "edge_dark_ratio"}  # a table from before the signal: 0
    assert np.allclose(risk.predict(no_edge), 1.0 - sig["tta_dice"])


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "forest"},
        {"kind": "disagreement", "features": ("anomaly",)},
        {
            "kind": "union",
            "features": ("tta_disagreement", "anomaly"),
            "mean": (0.0, 0.0),
            "scale": (1.0, 1.0),
            "coef": (1.0, 1.0),
        },
    ],
)
def test_an_unknown_kind_or_a_disagreement_of_another_feature_is_refused(bad: dict) -> None:
    base = {"features": ("tta_disagreement",), "mean": (0.0,), "scale": (1.0,), "coef": (1.0,), "intercept": 0.0}
    with pytest.raises(ValueError):
        FailureRisk(**{**base, **bad})


def test_the_open_end_is_the_share_of_the_slices_liver_outside_the_mask() -> None:
    """Past the mask's end (no mask) liver going on is all outside it: 1; on the mask's own slices 0 (nothing is
    computed there); a slice with some mask and some continuation, the continuation's share."""
    sig = random_signals(3, np.random.default_rng(2))
    sig["area_cm2"], sig["continuation_cm2"] = np.array([0.0, 30.0, 10.0]), np.array([12.0, 0.0, 10.0])
    assert features(sig, ("open_end",))[:, 0].tolist() == [1.0, 0.0, 0.5]
    del sig["continuation_cm2"]  # signals from before it existed
    assert features(sig, ("open_end",))[:, 0].tolist() == [0.0, 0.0, 0.0]
    risk = union_risk(("tta_disagreement", "open_end"))
    sig.update(tta_dice=np.ones(3), continuation_cm2=np.array([12.0, 0.0, 0.0]))
    assert risk.predict(sig).tolist() == [1.0, 0.0, 0.0]  # all passes agree on nothing there, yet it is a risk

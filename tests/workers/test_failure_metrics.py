"""workers.evaluation.failure_metrics: leave-one-patient-out fitted fusion ("gate") and its conformal
threshold, on synthetic per-slice tables (the real ones need the non-commercial data: reports/gate)."""

from __future__ import annotations

import numpy as np
import pytest

from models.quality import SIGNALS
from models.risk import FailureRule
from workers.evaluation.failure_metrics import lopo, patient_metrics, pooled_metrics


def table(seed: int, n: int = 120) -> dict[str, np.ndarray]:
    """A patient: liver on slices 10-109; the slices near its ends are small and fail more often."""
    rng = np.random.default_rng(seed)
    z = np.arange(n, dtype=float)
    inside = (z >= 10) & (z <= 109)
    dist = np.where(inside, np.minimum(z - 10, 109 - z) * 2.0, -1.0)
    area = np.where(inside, 5 + 2.0 * np.clip(dist, 0, 60), 0.0)
    fails = inside & (rng.uniform(size=n) < 1 / (1 + np.exp(0.3 * (dist - 8))))
    t = {f"signal_{k}": rng.uniform(0, 1, n) for k in SIGNALS}
    t.update(signal_area_cm2=area, signal_end_distance_mm=dist, signal_fraction=(z - 10) / 99,
             signal_components=np.ones(n), signal_anomaly=rng.normal(0, 1, n))  # fmt: skip
    large = area >= 10
    t["ref_area_cm2"] = area
    t["dice"] = np.where(inside, np.where(fails & large, 0.8, 0.97), np.nan)
    t["pred_area_cm2"] = np.where(fails & ~large, area + 6, area)
    t["positions_mm"], t["series_dice"], t["segment_seconds"] = z * 2.0, np.float64(0.96), np.float64(1.0)
    return t


def test_each_patient_is_scored_by_models_that_never_saw_its_labels() -> None:
    tables = {f"p{i}": table(i) for i in range(4)}
    per = lopo(tables, FailureRule(), alpha=0.05, how="gate")
    flipped = {**tables, "p0": {**tables["p0"], "dice": np.where(np.isnan(tables["p0"]["dice"]), np.nan, 0.5)}}
    again = lopo(flipped, FailureRule(), alpha=0.05, how="gate")
    assert np.array_equal(per["p0"]["risk"], again["p0"]["risk"])  # its own labels change nothing about it
    assert per["p0"]["threshold"] == again["p0"]["threshold"]  # nor its threshold (calibrated on the others)
    assert not np.array_equal(per["p1"]["risk"], again["p1"]["risk"])  # but they do train the others' models


def test_the_fused_risk_ranks_the_failures_and_the_threshold_holds_on_held_out_patients() -> None:
    tables = {f"p{i}": table(10 + i) for i in range(5)}
    per = lopo(tables, FailureRule(), alpha=0.05, how="gate")
    pooled = pooled_metrics(per, n_boot=200)
    assert pooled["failure_auroc"] > 0.85
    assert pooled["single_signal_auroc"]["end_distance"] > 0.85  # the signal the failures were drawn from
    assert 0.4 < pooled["single_signal_auroc"]["anomaly"] < 0.6  # noise stays at chance
    patients = patient_metrics(per, tables, FailureRule())
    joint = [m["accepted_and_failed"] for m in patients.values()]
    assert np.mean(joint) <= 0.05 + 0.03  # conformal risk control's target, with a small sample's slack
    assert all(m["coverage_at_threshold"] > 0.3 for m in patients.values())


def test_a_claim_past_the_liver_is_not_a_judged_slice_and_each_end_is_checked_against_the_reference() -> None:
    """Slices where only the ends check claims liver are not liver slices: judged, they were easy accepted slices
    for every risk without the ends term (the disagreement's coverage at 1 % risk went from 0 to 28.5 % on the
    folds of session 18). The false claim counts in the end's check instead."""
    from workers.evaluation.failure_metrics import end_checks
    from workers.training.risk_fit import judged

    t = table(3)
    n = len(t["ref_area_cm2"])
    t["ref_area_cm2"] = np.where(np.arange(n) <= 113, np.maximum(t["ref_area_cm2"], 0), 0.0)
    t["ref_area_cm2"][110:114] = 8.0  # the reference goes on 4 slices past the mask's cranial end (109): 32 cm²
    beyond = np.zeros(n)
    beyond[110:113] = 6.0  # the gate says 18 cm² continue there (open)
    beyond[6:10] = 1.5  # and 6 cm² past the caudal end, where the reference holds nothing (a false alarm)
    t["signal_continuation_cm2"] = beyond
    keep = judged(t)
    assert not keep[:10].any()  # neither mask holds liver there: not judged, claim or no claim
    caudal, cranial = end_checks(t)
    assert (caudal["side"], caudal["claimed_open"], caudal["truly_open"]) == ("caudal", True, False)
    assert (cranial["side"], cranial["claimed_open"], cranial["truly_open"]) == ("cranial", True, True)
    assert cranial["continuation_cm2"] == 18.0 and cranial["reference_beyond_cm2"] == 32.0
    del t["signal_continuation_cm2"]  # a table from before the signal: the same slices, and no end checks
    assert (judged(t) == keep).all() and end_checks(t) == []


def test_an_end_the_mask_thins_out_at_is_truly_open_without_reference_past_it() -> None:
    """The mask's last slices cover a small part of the reference (Dice tells how much): liver left out beside
    the mask's end counts as an open end although no reference lies past it."""
    from workers.evaluation.failure_metrics import end_checks

    t = table(3)
    n = len(t["ref_area_cm2"])
    present = np.flatnonzero(t["pred_area_cm2"] > 0)
    last = present[-1]
    t["ref_area_cm2"] = np.where(np.arange(n) <= last, t["ref_area_cm2"], 0.0)
    t["ref_area_cm2"][last - 3 : last + 1] = 20.0
    t["pred_area_cm2"][last - 3 : last + 1] = 2.0  # 2 of 20 cm² covered on the last four slices
    t["dice"][last - 3 : last + 1] = 2 * 2.0 / 22.0
    t["signal_continuation_cm2"] = np.zeros(n)
    far_end = end_checks(t)[-1]  # the end at the last slice
    assert far_end["reference_beyond_cm2"] == 0.0
    assert far_end["reference_left_out_cm2"] == pytest.approx(4 * 18.0)
    assert far_end["truly_open"] and not far_end["claimed_open"]

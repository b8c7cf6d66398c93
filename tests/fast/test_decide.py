"""``decide``: the routing rule on its own (no I/O)."""

from __future__ import annotations

import math

import numpy as np

from app.db.states import DecisionReason, Route
from workers.inference.scorer import VolumeScores
from workers.serving.route import Assessment, decide


def _scores(series: float, region: int | None = None) -> VolumeScores:
    z = np.array([series, series / 2])
    return VolumeScores(z, np.zeros((2, 4, 4), np.float16), np.zeros(2), "lung base", series, 1.0,
                        np.zeros(2, bool), region)  # fmt: skip


def test_auto_only_at_or_below_a_calibrated_threshold() -> None:
    assert decide(Assessment("k", 1, scores=_scores(0.5), threshold=1.0)).route == Route.AUTO
    assert decide(Assessment("k", 1, scores=_scores(1.0), threshold=1.0)).route == Route.AUTO
    high = decide(Assessment("k", 1, scores=_scores(1.5), threshold=1.0))
    assert (high.route, high.reason) == (Route.MANUAL, DecisionReason.ANOMALOUS)
    assert high.priority == 1.5


def test_every_doubt_is_manual() -> None:
    uncalibrated = decide(Assessment("k", 1, scores=_scores(0.1), threshold=None))
    assert (uncalibrated.route, uncalibrated.reason) == (Route.MANUAL, DecisionReason.SCORER_UNCALIBRATED)
    no_liver = decide(Assessment("k", 1, scores=_scores(0.0, region=0), threshold=1.0))
    assert (no_liver.route, no_liver.reason) == (Route.MANUAL, DecisionReason.NO_LIVER_FOUND)
    nan = decide(Assessment("k", 1, scores=_scores(math.nan), threshold=1.0))
    assert nan.route == Route.MANUAL  # a NaN score is never below a threshold
    refused = decide(Assessment("k", 1, refused=DecisionReason.SCORER_UNAVAILABLE))
    assert (refused.route, refused.reason, refused.priority) == (Route.MANUAL, DecisionReason.SCORER_UNAVAILABLE,
                                                                 math.inf)  # fmt: skip


def _risk(values: list[float], threshold: float | None, core: list[bool]):  # type: ignore[no-untyped-def]
    from workers.serving.route import FusedRisk

    return FusedRisk(np.array(values), threshold, np.array(core))


def test_the_fused_risk_sends_an_accepted_series_to_a_radiologist_with_the_slices() -> None:
    risky = Assessment("k", 1, scores=_scores(0.5), threshold=1.0, risk=_risk([0.9, 0.3], 0.2, [True, True]))
    d = decide(risky)
    assert (d.route, d.reason, d.top_slices) == (Route.MANUAL, DecisionReason.SEGMENTATION_RISK, [0, 1])
    assert d.detail == ("segmentation risk: 2 slices of the liver's core over the threshold 0.200 (worst 0.900, "
                        "x4.5); slices [0, 1]")  # fmt: skip
    # a risky slice outside the liver's core (its ends, where small cross-sections always disagree) is evidence,
    # not a reason: the series is accepted
    ends = Assessment("k", 1, scores=_scores(0.5), threshold=1.0, risk=_risk([0.9, 0.1], 0.2, [False, True]))
    assert decide(ends).route == Route.AUTO
    # no threshold (conformal risk control found none): nothing is accepted on the risk
    none = Assessment("k", 1, scores=_scores(0.5), threshold=1.0, risk=_risk([0.01, 0.01], None, [True, False]))
    assert decide(none).reason == DecisionReason.SEGMENTATION_RISK
    # the anomaly score still comes first, and a NaN score is never accepted, whatever the risk says
    high = decide(Assessment("k", 1, scores=_scores(1.5), threshold=1.0, risk=_risk([0.0, 0.0], 0.2, [True] * 2)))
    assert high.reason == DecisionReason.ANOMALOUS and high.detail.startswith("anomaly: series score 1.500")
    nan = Assessment("k", 1, scores=_scores(math.nan), threshold=1.0, risk=_risk([0.0, 0.0], 0.2, [True, True]))
    assert decide(nan).route == Route.MANUAL


def test_liver_going_on_past_the_mask_sends_an_accepted_series_to_a_radiologist_with_the_slices() -> None:
    from models.liver_ends import OpenEnd

    dome = OpenEnd("cranial", (120, 121, 122, 123), 59.4)
    short = Assessment("k", 1, scores=_scores(0.5), threshold=1.0, risk=_risk([0.1, 0.1], 0.2, [True, True]),
                       open_ends=[dome])  # fmt: skip
    d = decide(short)
    assert (d.route, d.reason, d.top_slices) == (Route.MANUAL, DecisionReason.LIVER_BEYOND_MASK, [120, 121, 122, 123])
    assert d.detail == ("the mask stops short of the liver's cranial end: 59 cm² of tissue of the liver's density "
                        "beside or past it are left out over slices 120-123")  # fmt: skip
    # without a risk model too (the shipped segmenter carries none)
    assert decide(Assessment("k", 1, scores=_scores(0.5), threshold=1.0, open_ends=[dome])).route == Route.MANUAL
    # the anomaly score and the core's risk come first; closed ends change nothing
    assert decide(Assessment("k", 1, scores=_scores(1.5), threshold=1.0, open_ends=[dome])).reason == (
        DecisionReason.ANOMALOUS)  # fmt: skip
    risky = Assessment("k", 1, scores=_scores(0.5), threshold=1.0, risk=_risk([0.9, 0.3], 0.2, [True, True]),
                       open_ends=[dome])  # fmt: skip
    assert decide(risky).reason == DecisionReason.SEGMENTATION_RISK
    assert decide(Assessment("k", 1, scores=_scores(0.5), threshold=1.0, open_ends=[])).route == Route.AUTO

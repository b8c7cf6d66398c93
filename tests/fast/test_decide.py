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

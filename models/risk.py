"""The gate's fused failure risk: a logistic model of the quality signals and the anomaly score, per slice.

``features`` turns the raw signals (``models.quality.SIGNALS`` plus ``anomaly``, the scorer's slice score)
into the model's inputs: areas on a log scale, distances clipped to the range where they carry information.
``FailureRisk`` holds the fitted standardisation and coefficients (plain floats, JSON), and the threshold
fixed by conformal risk control (``crc_threshold``): accept a slice when its risk is at most the threshold.
Its ``kind`` "disagreement" has nothing fitted but the threshold: the risk is the TTA disagreement itself
(1 - the mean Dice between the plain pass and each augmented one), the most robust simple failure signal in
Zenk et al. (MedIA 2025), and the one that transferred across patients here (``reports/gate``).
Fitting lives in ``workers.training.risk_fit``; here only what serving needs. Pure numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

FEATURES = (
    "log_area",
    "end_distance",
    "fraction_edge",
    "tta_disagreement",
    "tta_area_cv",
    "uncertain_ratio",
    "extra_components",
    "removed_ratio",
    "area_jump",
    "edge_dark",
    "anomaly",
    "feature_distance",
    "open_end",
)


def features(signals: dict[str, np.ndarray], names: tuple[str, ...] = FEATURES) -> np.ndarray:
    """(Z,) signals by name -> (Z, F) model inputs, in ``names``' order (missing anomaly or feature
    distance: 0)."""
    area = np.asarray(signals["area_cm2"], dtype=np.float64)
    fraction = np.asarray(signals["fraction"], dtype=np.float64)
    columns = {
        "log_area": np.log1p(area),
        "end_distance": np.clip(signals["end_distance_mm"], -30.0, 60.0),
        "fraction_edge": np.clip(np.minimum(fraction, 1.0 - fraction), -0.5, 0.5),
        "tta_disagreement": 1.0 - np.asarray(signals["tta_dice"], dtype=np.float64),
        "tta_area_cv": np.clip(signals["tta_area_cv"], 0.0, 2.0),
        "uncertain_ratio": np.clip(signals["uncertain_ratio"], 0.0, 5.0),
        "extra_components": np.clip(np.asarray(signals["components"]) - 1.0, 0.0, 5.0),
        "removed_ratio": np.asarray(signals["removed_ratio"], dtype=np.float64),
        "area_jump": np.clip(signals["area_jump"], 0.0, 2.0),
        # tables and risk models from before the signal existed have no column: 0 (coefficient 0 under L2)
        "edge_dark": np.asarray(signals.get("edge_dark_ratio", np.zeros_like(area)), dtype=np.float64),
        "anomaly": np.asarray(signals.get("anomaly", np.zeros_like(area)), dtype=np.float64),
        # a segmenter without a feature density: 0 (a constant column, coefficient 0 under L2)
        "feature_distance": np.log1p(np.asarray(signals.get("feature_distance", np.zeros_like(area)), np.float64)),
        # the share of the slice's liver (mask and what continues past the mask's end) outside the mask: 1 on a
        # slice past the end where liver-like tissue goes on (models.liver_ends), 0 elsewhere
        "open_end": _open_end_share(signals, area),
    }
    return np.stack([columns[n] for n in names], axis=1)


def _open_end_share(signals: dict[str, np.ndarray], area: np.ndarray) -> np.ndarray:
    beyond = np.asarray(signals.get("continuation_cm2", np.zeros_like(area)), dtype=np.float64)
    return np.where(beyond > 0, beyond / np.maximum(beyond + area, 1e-9), 0.0)


KINDS = ("logistic", "disagreement", "union")
# Signals that are each a share of the slice's predicted mask in doubt (0 none, 1 all of it): their maximum is
# a risk with nothing fitted ("union": the share in doubt for either reason).
SHARE_FEATURES = ("tta_disagreement", "edge_dark", "open_end")


@dataclass(frozen=True)
class FailureRisk:
    """``kind`` "logistic": standardised logistic regression, risk = sigmoid(intercept + coef . (x - mean) / scale);
    "disagreement": risk = the ``tta_disagreement`` feature itself, in [0, 1] (see the module docstring);
    "union": risk = the largest of its ``SHARE_FEATURES`` (each a share of the mask in doubt), in [0, 1]."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float | None = None  # accept a slice when risk <= threshold (conformal risk control)
    alpha: float | None = None  # the risk level the threshold controls
    fitted_on: dict = field(default_factory=dict)  # patients, slices, failures, model versions
    kind: str = "logistic"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "disagreement" and self.features != ("tta_disagreement",):
            raise ValueError("a disagreement risk reads the one feature 'tta_disagreement'")
        if self.kind == "union" and (not self.features or set(self.features) - set(SHARE_FEATURES)):
            raise ValueError(f"a union risk reads shares of the mask only: some of {SHARE_FEATURES}")
        n = len(self.features)
        if not (len(self.mean) == len(self.scale) == len(self.coef) == n):
            raise ValueError(f"features, mean, scale and coef must have one value per feature ({n})")
        if any(s <= 0 for s in self.scale):
            raise ValueError("scale must be > 0")
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; known: {FEATURES}")

    def predict(self, signals: dict[str, np.ndarray]) -> np.ndarray:
        """(Z,) failure risk per slice in [0, 1]."""
        if self.kind in ("disagreement", "union"):  # nothing fitted: the largest share in doubt (one or more)
            return np.clip(features(signals, self.features).max(axis=1), 0.0, 1.0)
        x = (features(signals, self.features) - np.asarray(self.mean)) / np.asarray(self.scale)
        z = self.intercept + x @ np.asarray(self.coef)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> FailureRisk:
        tuples = {k: tuple(d[k]) for k in ("features", "mean", "scale", "coef")}
        return cls(**{**d, **tuples})  # a risk saved before ``kind`` existed is logistic


def disagreement_risk() -> FailureRisk:
    """The parameter-free risk: the TTA disagreement (its threshold comes from ``crc_threshold``)."""
    return FailureRisk(features=("tta_disagreement",), mean=(0.0,), scale=(1.0,), coef=(1.0,), intercept=0.0,
                       kind="disagreement")  # fmt: skip


def union_risk(shares: tuple[str, ...] = ("tta_disagreement", "edge_dark")) -> FailureRisk:
    """A parameter-free union: the largest of some ``SHARE_FEATURES`` (by default the TTA disagreement and the dark
    edge, ``edge_dark_ratio``: session 16's union)."""
    n = len(shares)
    return FailureRisk(features=tuple(shares), mean=(0.0,) * n, scale=(1.0,) * n, coef=(1.0,) * n, intercept=0.0,
                       kind="union")  # fmt: skip


@dataclass(frozen=True)
class FailureRule:
    """What counts as a segmentation failure (issue #14's clinical definition).

    Per slice: Dice < ``dice`` where the reference cross-section is at least ``large_cm2``; an absolute
    area error above ``area_error_cm2`` where it is smaller (a missed or invented sliver of a few cm² is not a
    failure; a 6 cm² island is). Per series: Dice < ``series_dice``, or a failing slice in the liver's core
    (the middle of the reference liver's cranio-caudal extent, ``core``)."""

    dice: float = 0.9
    large_cm2: float = 10.0
    area_error_cm2: float = 5.0
    series_dice: float = 0.95
    core: tuple[float, float] = (0.2, 0.8)


def slice_failures(
    dice: np.ndarray, ref_area_cm2: np.ndarray, pred_area_cm2: np.ndarray, rule: FailureRule, clinical: bool = True
) -> np.ndarray:
    """(Z,) bool; ``clinical=False``: the old definition, Dice < 0.9 wherever the reference holds liver."""
    d = np.nan_to_num(dice, nan=1.0)
    if not clinical:
        return (ref_area_cm2 > 0) & (d < rule.dice)
    return np.where(
        ref_area_cm2 >= rule.large_cm2, d < rule.dice, np.abs(pred_area_cm2 - ref_area_cm2) > rule.area_error_cm2
    )


def crc_threshold(risk: np.ndarray, failed: np.ndarray, alpha: float) -> float | None:
    """Conformal risk control (Angelopoulos et al., "Conformal Risk Control", ICLR 2024) for acceptance.

    Loss of a calibration slice at threshold t: 1 when it is accepted (risk <= t) and failed, else 0; it
    grows with t and is at most 1. The largest t with (n R(t) + 1) / (n + 1) <= alpha, R the calibration
    mean, guarantees E[loss on a new slice] <= alpha when the calibration and test slices are exchangeable:
    the share of slices that are both accepted and failures, not the failure rate among accepted ones (that
    is at most alpha / coverage). None when no threshold satisfies it (accept nothing).
    """
    risk, failed = np.asarray(risk, dtype=np.float64), np.asarray(failed, dtype=bool)
    n = len(risk)
    if n == 0:
        return None
    order = np.argsort(risk, kind="stable")
    r, f = risk[order], failed[order]
    joint = np.cumsum(f) / n  # R(t) at t = r[i], ties resolved below
    last = np.r_[r[1:] != r[:-1], True]
    ok = ((n * joint + 1) / (n + 1) <= alpha) & last
    if not ok.any():
        return None
    return float(r[np.flatnonzero(ok)[-1]])

"""Gate metrics: failures per slice, risk-coverage, accepted against rejected; pure numpy.

Shared by ``gate_eval`` (which computes them) and ``gate_report`` (which plots them); the AUROC and its
grouped bootstrap are ``models.metrics``'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.metrics import auroc, bootstrap_auroc_ci
from workers.evaluation.cases import EvalConfig


@dataclass(frozen=True)
class GateConfig:
    heldout: str = "ircadb-01"
    same_patient: str = "ircadb-17"  # training data of both models: a check, not a result
    failure_dice: float = 0.9  # a liver slice below this Dice is a segmentation failure
    drop_margin: float = 0.05  # a pair also fails when the lesion lowers Dice by this much
    normal_gap: int = 2  # slices between a lesion and a slice called normal (MANIFEST: about 3 mm)
    goal_risk: float = 0.01
    goal_normal_accepted: float = 0.70
    goal_auroc: float = 0.95
    max_pairs: int = 240
    block: int = 8  # slices per bootstrap block on one series (neighbouring slices are not independent)
    n_boot: int = 1000
    fast: bool = True  # the worker scores with channels_last + bf16 autocast (route.decide)
    pairs: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------- pure metrics


def failed_slices(dice_per_slice: np.ndarray, liver: np.ndarray, failure_dice: float) -> np.ndarray:
    """Failure per slice: Dice < failure_dice where the reference holds liver (False elsewhere)."""
    return liver & (np.nan_to_num(dice_per_slice, nan=0.0) < failure_dice)


def risk_coverage(scores: np.ndarray, failed: np.ndarray) -> dict[str, np.ndarray]:
    """Accept the lowest scores first: coverage = share accepted, risk = failure rate among them.

    One point per distinct score (a threshold accepts all tied slices or none); ``threshold`` is
    the largest accepted score, so "accept score <= threshold" reproduces each point.
    """
    order = np.argsort(scores, kind="stable")
    s, f = np.asarray(scores)[order], np.asarray(failed, dtype=float)[order]
    n = np.arange(1, len(s) + 1)
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)
    return {"threshold": s[last], "coverage": n[last] / max(len(s), 1), "risk": np.cumsum(f)[last] / n[last]}


def coverage_at_risk(curve: dict[str, np.ndarray], max_risk: float) -> dict[str, float | None]:
    """The largest coverage whose risk is <= max_risk, and its threshold (coverage 0 when none)."""
    ok = np.flatnonzero(curve["risk"] <= max_risk + 1e-12)
    if ok.size == 0:
        return {"coverage": 0.0, "threshold": None}
    i = ok[np.argmax(curve["coverage"][ok])]
    return {"coverage": float(curve["coverage"][i]), "threshold": float(curve["threshold"][i])}


def aurc(curve: dict[str, np.ndarray]) -> float | None:
    """Area under the risk-coverage curve (risk held constant between points; lower is better)."""
    if len(curve["coverage"]) == 0:
        return None
    widths = np.diff(np.r_[0.0, curve["coverage"]])
    return float(np.sum(widths * curve["risk"]))


def dice_summary(dice_values: np.ndarray, failed: np.ndarray) -> dict[str, Any]:
    n = int(len(dice_values))
    return {
        "n": n,
        "dice_mean": float(np.mean(dice_values)) if n else None,
        "dice_median": float(np.median(dice_values)) if n else None,
        "failures": int(np.sum(failed)),
        "failure_rate": float(np.mean(failed)) if n else None,
    }


def accepted_rejected(scores: np.ndarray, dice_values: np.ndarray, failed: np.ndarray, threshold: float) -> dict:
    """Dice and failures of the slices the gate accepts (score <= threshold) and rejects (route: score > t)."""
    accepted = np.asarray(scores) <= threshold
    return {
        "accepted": dice_summary(dice_values[accepted], failed[accepted]),
        "rejected": dice_summary(dice_values[~accepted], failed[~accepted]),
        "coverage": float(np.mean(accepted)) if len(accepted) else None,
    }


def threshold_for_acceptance(normal_scores: np.ndarray, share: float) -> float | None:
    """The smallest threshold that accepts (score <= t) at least ``share`` of ``normal_scores``."""
    if len(normal_scores) == 0:
        return None
    ordered = np.sort(normal_scores)
    return float(ordered[int(np.ceil(share * len(ordered))) - 1]) if share > 0 else float(ordered[0]) - 1.0


def normal_slices(liver: np.ndarray, lesion: np.ndarray, gap: int) -> np.ndarray:
    """Liver slices with no lesion within ``gap`` slices (the MANIFEST's normal-liver rule)."""
    near = np.convolve(lesion.astype(int), np.ones(2 * gap + 1, dtype=int), mode="same") > 0
    return liver & ~near


def split_metrics(
    scores: np.ndarray,
    dice_values: np.ndarray,
    liver: np.ndarray,
    failed: np.ndarray,
    threshold: float,
    *,
    goal_risk: float,
    blocks: np.ndarray | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Slice-level gate metrics on the liver slices of one set of slices."""
    s, d, f = scores[liver], dice_values[liver], failed[liver]
    curve = risk_coverage(s, f)
    out: dict[str, Any] = {
        "n_liver_slices": int(liver.sum()),
        "n_failures": int(f.sum()),
        "failure_rate_all": float(np.mean(f)) if len(f) else None,
        "at_threshold": accepted_rejected(s, d, f, threshold),
        "auroc_failure": auroc(s, f),
        "aurc": aurc(curve),
        "at_goal_risk": coverage_at_risk(curve, goal_risk),
    }
    if blocks is not None:
        out["auroc_failure_ci95"] = bootstrap_auroc_ci(s, f, blocks[liver], n_boot)
    return out


@dataclass
class SeriesRun:
    """Per-slice results of one series (arrays of length Z) and its series-level numbers."""

    name: str
    scores: np.ndarray
    positions: np.ndarray  # the scorer's normalised positions (its own BodyPositionConfig)
    position_mm: np.ndarray  # mm from the lung base (default BodyPositionConfig), for the confound
    series_score: float
    dice: np.ndarray  # NaN where neither reference nor prediction holds liver
    liver: np.ndarray  # reference holds liver
    lesion: np.ndarray  # reference holds a tumour or cyst
    liver_area_cm2: np.ndarray
    predicted_off_liver: int  # predicted liver pixels on slices whose reference has none
    series_dice: float
    mask: np.ndarray  # (Z, Y, X) uint8 prediction

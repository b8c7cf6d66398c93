"""Does the gate predict where the segmenter fails? Labels, leave-one-patient-out fusion, conformal threshold.

Input: ``failure_eval``'s per-slice tables, one per patient, each from the segmenter fold that never saw
that patient. Everything here is pure numpy (plus the fit in ``workers.training.risk_fit``).

Failure: ``models.risk.FailureRule`` (the issue's clinical definition), and the old one (Dice < 0.9 wherever
the reference holds liver) beside it.

The slices judged are the "liver slices": those where the reference or the prediction holds liver.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.liver_ends import COVER_SHARE, OPEN_CM2, ZONE_MM, mask_ends, open_ends
from models.metrics import auroc, bootstrap_auroc_ci
from models.risk import FEATURES, FailureRule, crc_threshold, features
from workers.evaluation.gate_metrics import aurc, coverage_at_risk, risk_coverage
from workers.training.risk_fit import DEFAULT_FIT, failures_of, fit_on, judged, out_of_case_risk, signals_of


def reference_core(t: dict[str, np.ndarray], rule: FailureRule) -> np.ndarray:
    idx = np.flatnonzero(t["ref_area_cm2"] > 0)
    out = np.zeros(len(t["ref_area_cm2"]), dtype=bool)
    if idx.size:
        pos = t["positions_mm"]
        f = (pos - pos[idx[0]]) / max(pos[idx[-1]] - pos[idx[0]], 1e-6)
        out = (f >= rule.core[0]) & (f <= rule.core[1])
    return out


def predicted_core(t: dict[str, np.ndarray], rule: FailureRule) -> np.ndarray:
    """The core as the gate sees it: the middle of the *predicted* liver's extent (no reference needed)."""
    f = t["signal_fraction"]
    return (f >= rule.core[0]) & (f <= rule.core[1])


# Each single signal in the direction that means "riskier" (fixed in advance, not fitted).
SINGLE_DIRECTION = {
    "log_area": -1, "end_distance": -1, "fraction_edge": -1, "tta_disagreement": 1, "tta_area_cv": 1,
    "uncertain_ratio": 1, "extra_components": 1, "removed_ratio": 1, "area_jump": 1, "edge_dark": 1, "anomaly": 1,
    "feature_distance": 1, "open_end": 1,
}  # fmt: skip


def lopo(
    tables: dict[str, dict[str, np.ndarray]],
    rule: FailureRule,
    *,
    alpha: float = 0.01,
    names: tuple[str, ...] = FEATURES,
    clinical: bool = True,
    how: str = DEFAULT_FIT,
) -> dict[str, Any]:
    """Leave one patient out: risk from a model fit on the others; threshold by conformal risk control on the
    others' risks from models that left each of them out too (nested), so no calibration slice is in-sample."""
    patients = sorted(tables)
    per: dict[str, Any] = {}
    for held in patients:
        others = [p for p in patients if p != held]
        model = fit_on({p: tables[p] for p in others}, rule, names, clinical, how=how)
        keep = judged(tables[held])
        risk = model.predict(signals_of(tables[held], keep))
        try:  # the others' risks, each from a model that left it out too (risk_fit.out_of_case_risk)
            cal_risk, cal_fail = out_of_case_risk({p: tables[p] for p in others}, rule, names, clinical, how=how)
            threshold = crc_threshold(cal_risk, cal_fail, alpha)
        except ValueError:  # no other patient could be predicted from the rest
            threshold = None
        per[held] = {"risk": risk, "failed": failures_of(tables[held], rule, clinical)[keep],
                     "features": features(signals_of(tables[held], keep), names), "names": names,
                     "threshold": threshold,
                     "model": model, "core": reference_core(tables[held], rule)[keep],
                     "pred_core": predicted_core(tables[held], rule)[keep]}  # fmt: skip
    return per


def blocks_of(per: dict[str, Any], block: int = 8) -> np.ndarray:
    """Bootstrap groups: runs of ``block`` neighbouring judged slices of one patient (not independent)."""
    return np.concatenate([i * 10_000 + np.arange(len(per[p]["risk"])) // block for i, p in enumerate(sorted(per))])


def pooled_metrics(per: dict[str, Any], *, goal_risk: float = 0.01, n_boot: int = 1000) -> dict[str, Any]:
    risk = np.concatenate([per[p]["risk"] for p in sorted(per)])
    failed = np.concatenate([per[p]["failed"] for p in sorted(per)])
    curve = risk_coverage(risk, failed)
    n70 = int(np.floor(0.7 * len(risk)))
    order = np.argsort(risk, kind="stable")
    singles = {}
    x = np.concatenate([per[p]["features"] for p in sorted(per)])
    names = per[sorted(per)[0]]["names"]
    for j, name in enumerate(names):
        singles[name] = auroc(SINGLE_DIRECTION[name] * x[:, j], failed)
    return {
        "slices": int(len(risk)),
        "failures": int(failed.sum()),
        "failure_rate": float(failed.mean()) if len(failed) else None,
        "failure_auroc": auroc(risk, failed),
        "failure_auroc_ci95": bootstrap_auroc_ci(risk, failed, blocks_of(per), n_boot),
        "risk_at_70pct_coverage": float(failed[order[:n70]].mean()) if n70 else None,
        "coverage_at_1pct_risk": coverage_at_risk(curve, goal_risk)["coverage"],
        "aurc": aurc(curve),
        "single_signal_auroc": singles,
        "curve": {k: v.tolist() for k, v in curve.items()},
    }


def end_checks(t: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Both ends of the written mask: did the gate call it open (``models.liver_ends``), and how much of the
    reference liver the mask leaves out there: past the end, and on its own last ``ZONE_MM`` where it covers
    less than ``COVER_SHARE`` of the reference (the check's own two places; truly open: ``OPEN_CM2`` or more)."""
    present = t["pred_area_cm2"] > 0
    if "signal_continuation_cm2" not in t:
        return []
    pos = t["positions_mm"]
    claimed = {e.side: e for e in open_ends(t["signal_continuation_cm2"], present, pos)}
    ref, pred = t["ref_area_cm2"], t["pred_area_cm2"]
    covered = np.nan_to_num(t["dice"]) * (ref + pred) / 2.0  # |mask n reference| from the slice's Dice
    thinned = present & (covered < COVER_SHARE * ref)
    out = []
    for end, step, side in mask_ends(present, pos):
        beyond = np.arange(end) if step < 0 else np.arange(end + 1, len(present))
        zone = np.flatnonzero(present & (np.abs(pos - pos[end]) <= ZONE_MM) & thinned)
        missed_beyond = float(ref[beyond].sum())
        missed = missed_beyond + float((ref - covered)[zone].sum())
        found = claimed.get(side)
        going_on = float(found.area_cm2) if found else float(t["signal_continuation_cm2"][beyond].sum())
        out.append({"side": side, "end_slice": int(end), "claimed_open": found is not None,
                    "continuation_cm2": going_on, "reference_beyond_cm2": missed_beyond,
                    "reference_left_out_cm2": missed, "truly_open": missed >= OPEN_CM2})  # fmt: skip
    return out


def patient_metrics(per: dict[str, Any], tables: dict[str, dict], rule: FailureRule) -> dict[str, Any]:
    out = {}
    for p in sorted(per):
        r, f, t = per[p]["risk"], per[p]["failed"], per[p]["threshold"]
        accepted = r <= t if t is not None else np.zeros(len(r), dtype=bool)
        n70 = int(np.floor(0.7 * len(r)))
        order = np.argsort(r, kind="stable")
        core, pred_core = per[p]["core"], per[p]["pred_core"]
        table = tables[p]
        series_fail = bool(float(table["series_dice"]) < rule.series_dice or (f & core).any())
        ends = end_checks(table)
        open_end = any(e["claimed_open"] for e in ends)
        out[p] = {
            "slices": int(len(r)),
            "failures": int(f.sum()),
            "auroc": auroc(r, f),
            "risk_at_70pct_coverage": float(f[order[:n70]].mean()) if n70 else None,
            "crc_threshold": t,
            "coverage_at_threshold": float(accepted.mean()),
            "failure_rate_accepted": float(f[accepted].mean()) if accepted.any() else None,
            "accepted_and_failed": float((accepted & f).mean()),
            "series_dice": float(table["series_dice"]),
            "series_failure": series_fail,
            # the series decision sees only the prediction: auto when no slice of the predicted core is over
            "core_max_risk": float(r[pred_core].max()) if pred_core.any() else None,
            # and no end of the mask open (liver-like tissue going on past it: the series decision's own check)
            "series_auto": bool(t is not None and pred_core.any() and r[pred_core].max() <= t and not open_end),
            "series_auto_without_end_check": bool(t is not None and pred_core.any() and r[pred_core].max() <= t),
            "ends": ends,
            "segment_seconds": float(table["segment_seconds"]),
            "segmenter_step": int(table["segmenter_step"]) if "segmenter_step" in table else None,
            "coef": dict(zip(per[p]["model"].features, per[p]["model"].coef, strict=True)),
        }
    return out

"""Scorer metrics: paired lesion AUROCs, their tumour-level bootstrap, pixel AUROC and FPR; pure numpy.

A lesion pair is one slice scored with and without a transplanted lesion; pairs from one donor tumour
are not independent, so every interval resamples whole tumours (``models.metrics.group_resamples``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.metrics import auroc_of, group_resamples


def paired_metrics(base: np.ndarray, modified: np.ndarray) -> dict[str, Any]:
    """AUROC (modified = positive, the pairs' unmodified slices = negative) and the share of pairs
    whose score rose (the paired version: it cancels the between-slice variation)."""
    return {
        "n": int(len(modified)),
        "auroc": auroc_of(base, modified),
        "rose": float(np.mean(modified > base)) if len(modified) else None,
        "median_rel_change": float(np.median((modified - base) / np.abs(base).clip(1e-12))) if len(modified) else None,
    }


def cluster_bootstrap_ci(
    base: np.ndarray, modified: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """95 % intervals of AUROC and 'rose', resampling whole groups (donor tumours) with replacement:
    pairs from one tumour are not independent."""
    aurocs, rose = [], []
    for idx in group_resamples(groups, n_boot, seed):
        a = auroc_of(base[idx], modified[idx])
        if a is not None:
            aurocs.append(a)
        rose.append(float(np.mean(modified[idx] > base[idx])))
    q = [2.5, 97.5]
    return {
        "auroc_ci95": [float(v) for v in np.percentile(aurocs, q)],
        "rose_ci95": [float(v) for v in np.percentile(rose, q)],
    }


def auroc_difference_ci(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC of model a minus that of model b on the same (unmodified, modified) pairs, with a 95 %
    interval from resampling whole groups (donor tumours) with replacement, the same resample for both
    models: their errors on one tumour are correlated, so separate intervals would overstate the doubt."""
    diffs = []
    for idx in group_resamples(groups, n_boot, seed):
        da, db = auroc_of(a[0][idx], a[1][idx]), auroc_of(b[0][idx], b[1][idx])
        if da is not None and db is not None:
            diffs.append(da - db)
    full_a, full_b = auroc_of(*a), auroc_of(*b)
    return {
        "difference": None if full_a is None or full_b is None else full_a - full_b,
        "ci95": [float(v) for v in np.percentile(diffs, [2.5, 97.5])] if diffs else None,
        "n_pairs": int(len(groups)),
        "n_groups": int(len(np.unique(groups))),
    }


def top_fraction_score(heat: np.ndarray, valid: torch.Tensor, fraction: float = 0.01) -> np.ndarray:
    """Diagnostic score, not the model's: mean of the top ``fraction`` of each heat-map's valid pixels."""
    from models.scorer import reduce_map

    return reduce_map(torch.as_tensor(heat)[:, None], valid, fraction).numpy()


def pixel_auroc(heat: np.ndarray, positive: np.ndarray, inside: np.ndarray) -> float | None:
    """Pooled pixel AUROC of ``heat`` inside ``inside`` (bool), labels ``positive`` (bool)."""
    sel = inside.astype(bool)
    return auroc_of(heat[sel & ~positive], heat[sel & positive])


def fpr_metrics(heldout: np.ndarray, threshold: float, source: str, target: float) -> dict[str, Any]:
    """FPR at the calibrated threshold, and a cross-fitted FPR (threshold from one half of the
    held-out slices, rate on the other, both ways; the halves are alternate slices)."""
    from models.scorer import calibrate_threshold, false_positive_rate

    halves = [heldout[0::2], heldout[1::2]]
    cross = [
        false_positive_rate(torch.as_tensor(halves[1 - h]), calibrate_threshold(torch.as_tensor(halves[h]), target))
        for h in (0, 1)
    ]
    return {
        "threshold": threshold,
        "threshold_source": source,
        "target_fpr": target,
        "fpr_heldout": false_positive_rate(torch.as_tensor(heldout), threshold),
        "fpr_crossfit": float(np.mean(cross)),
        "n_heldout": int(len(heldout)),
    }

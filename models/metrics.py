"""The evaluation metrics every report uses: one Dice, one AUROC, one grouped bootstrap.

Pure numpy/scipy; scores and masks in, numbers out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    """Dice 2|A n B| / (|A| + |B|) over ``axis`` (all axes when None); NaN where both are empty."""
    p, t = pred > 0, truth > 0
    inter = np.logical_and(p, t).sum(axis=axis, dtype=np.int64)
    total = p.sum(axis=axis, dtype=np.int64) + t.sum(axis=axis, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), np.nan)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """AUROC of ``scores`` for the ``positive`` (bool) class; None without both classes.

    Mann-Whitney U from average ranks (ties count one half, as ``sklearn.metrics.roc_auc_score``),
    ~100x faster than sklearn inside a bootstrap.
    """
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_of(negatives: np.ndarray, positives: np.ndarray) -> float | None:
    """``auroc`` of two samples: ``positives`` scored against ``negatives``."""
    negatives, positives = np.asarray(negatives).ravel(), np.asarray(positives).ravel()
    labels = np.r_[np.zeros(len(negatives), bool), np.ones(len(positives), bool)]
    return auroc(np.r_[negatives, positives], labels)


def group_resamples(groups: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Indices of ``n_boot`` bootstrap samples that draw whole groups (donor tumours, slice blocks) with
    replacement: members of one group are not independent."""
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in ids]
    for _ in range(n_boot):
        yield np.concatenate([members[i] for i in rng.integers(len(ids), size=len(ids))])


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float | None], groups: np.ndarray, n_boot: int = 1000, seed: int = 0,
    min_share: float = 0.0,
) -> list[float] | None:  # fmt: skip
    """95 % percentile interval of ``statistic(indices)`` over grouped resamples; None when fewer than
    ``min_share`` of the resamples (or none) give a value."""
    values = [v for idx in group_resamples(groups, n_boot, seed) if (v := statistic(idx)) is not None]
    if not values or len(values) < min_share * n_boot:
        return None
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def bootstrap_auroc_ci(
    scores: np.ndarray, positive: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> list[float] | None:
    """95 % interval of ``auroc``, resampling whole groups; None unless half the resamples have both classes."""
    return bootstrap_ci(lambda idx: auroc(scores[idx], positive[idx]), groups, n_boot, seed, min_share=0.5)

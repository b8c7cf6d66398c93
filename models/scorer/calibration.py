"""Threshold calibration on held-out normal scores at a target false-positive rate."""

from __future__ import annotations

import math

import torch


def calibrate_threshold(normal_scores: torch.Tensor, target_fpr: float = 0.05) -> float:
    """Smallest threshold t with fraction(normal_scores > t) <= target_fpr.

    A score above the threshold is flagged. With n normal scores, the achieved
    rate is floor(target_fpr * n) / n (it never exceeds the target on the
    calibration set); on new normal data it estimates the false-positive rate.
    """
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    scores = torch.as_tensor(normal_scores, dtype=torch.float64).flatten()
    if scores.numel() == 0 or not bool(torch.isfinite(scores).all()):
        raise ValueError("normal_scores must be non-empty and finite")
    ordered = scores.sort().values
    n_allowed = math.floor(target_fpr * ordered.numel())  # scores allowed above the threshold
    return float(ordered[ordered.numel() - 1 - n_allowed])


def false_positive_rate(normal_scores: torch.Tensor, threshold: float) -> float:
    """Fraction of normal scores flagged (strictly above the threshold)."""
    scores = torch.as_tensor(normal_scores).flatten()
    return float((scores > threshold).double().mean())


def calibrate_by_position(
    normal_scores: torch.Tensor,
    positions: torch.Tensor,
    bin_edges: list[float],
    target_fpr: float = 0.05,
    min_per_bin: int = 20,
) -> list[float]:
    """One threshold per position bin (len(bin_edges) + 1 bins); bins with fewer than
    ``min_per_bin`` scores (or unknown positions) fall back to the global threshold."""
    scores = torch.as_tensor(normal_scores, dtype=torch.float64).flatten()
    pos = torch.as_tensor(positions, dtype=torch.float64).flatten()
    global_t = calibrate_threshold(scores, target_fpr)
    bins = torch.bucketize(pos, torch.tensor(bin_edges, dtype=torch.float64))
    out = []
    for b in range(len(bin_edges) + 1):
        sel = scores[(bins == b) & ~torch.isnan(pos)]
        out.append(calibrate_threshold(sel, target_fpr) if sel.numel() >= min_per_bin else global_t)
    return out


def calibrate_series_threshold(
    normal_slice_scores: torch.Tensor,
    n_slices: int,
    top_k: int = 3,
    target_fpr: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> float:
    """Threshold for the series score (mean of the top-k slice scores) from normal *slice* scores.

    Simulates normal series of ``n_slices`` slices by drawing slice scores with
    replacement, and calibrates on their series scores. It assumes slices are
    independent, which ignores between-patient variation: a stop-gap until
    enough held-out normal *series* (say >= 20) allow calibrating series scores
    directly with ``calibrate_threshold``.
    """
    if n_slices < 1 or top_k < 1 or n_boot < 1:
        raise ValueError(f"n_slices, top_k and n_boot must be >= 1, got {n_slices}, {top_k}, {n_boot}")
    scores = torch.as_tensor(normal_slice_scores, dtype=torch.float64).flatten()
    if scores.numel() == 0 or not bool(torch.isfinite(scores).all()):
        raise ValueError("normal_slice_scores must be non-empty and finite")
    gen = torch.Generator().manual_seed(seed)
    draws = scores[torch.randint(scores.numel(), (n_boot, n_slices), generator=gen)]  # (n_boot, n_slices)
    series = draws.topk(min(top_k, n_slices), dim=1).values.mean(1)  # (n_boot,)
    return calibrate_threshold(series, target_fpr)

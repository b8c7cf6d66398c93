"""Anomaly score, its heat-map, and series aggregation (pure tensor functions).

Score of f-AnoGAN (Schlegl et al. 2019, eq. 6):
    A(x) = mean_pixels (x - G(E(x)))^2 + kappa * mean_features (f(x) - f(G(E(x))))^2.
The heat-map makes every score inspectable: the pixel residual averaged over
the input channels, plus kappa times the feature residual averaged over the
critic's channels at its 4 x 4 resolution, up-sampled by nearest neighbour.
Nearest up-sampling keeps means, so with no mask and no top-k the score is
exactly the mean of its heat-map, and that mean equals A(x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def anomaly_map(
    x: torch.Tensor, x_rec: torch.Tensor, fmap_x: torch.Tensor, fmap_rec: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """(B, C, H, W) images and (B, K, h, w) critic feature maps -> heat-map (B, 1, H, W)."""
    if x.shape != x_rec.shape or fmap_x.shape != fmap_rec.shape:
        raise ValueError("x and x_rec, fmap_x and fmap_rec must have matching shapes")
    if x.shape[-1] % fmap_x.shape[-1] or x.shape[-2] % fmap_x.shape[-2]:
        raise ValueError(f"feature map {tuple(fmap_x.shape[-2:])} must divide image {tuple(x.shape[-2:])}")
    pixel = ((x - x_rec) ** 2).mean(1, keepdim=True)  # (B, 1, H, W)
    feature = ((fmap_x - fmap_rec) ** 2).mean(1, keepdim=True)  # (B, 1, h, w)
    return pixel + kappa * F.interpolate(feature, size=x.shape[-2:], mode="nearest")


def reduce_map(
    heatmap: torch.Tensor, valid: torch.Tensor | None = None, top_k_fraction: float | None = None
) -> torch.Tensor:
    """Heat-map (B, 1, H, W) -> score (B,): mean over valid pixels, or mean of the top fraction."""
    flat = heatmap.flatten(1)  # (B, HW)
    mask = torch.ones_like(flat, dtype=torch.bool) if valid is None else valid.flatten(1).bool()
    if top_k_fraction is None:
        return (flat * mask).sum(1) / mask.sum(1).clamp(min=1)
    if not 0 < top_k_fraction <= 1:
        raise ValueError(f"top_k_fraction must be in (0, 1], got {top_k_fraction}")
    k = max(1, int(round(top_k_fraction * flat.shape[1])))
    masked = torch.where(mask, flat, torch.full_like(flat, float("-inf")))
    top = masked.topk(k, dim=1).values  # (B, k)
    n_valid = mask.sum(1, keepdim=True)  # keep only finite (valid) entries; none valid: score 0
    keep = torch.arange(k, device=flat.device)[None] < n_valid
    return torch.where(keep, top, torch.zeros_like(top)).sum(1) / keep.sum(1).clamp(min=1)


def aggregate_series(slice_scores: torch.Tensor, top_k: int = 3) -> torch.Tensor:
    """Series score = mean of the ``top_k`` highest slice scores (all slices if fewer).

    A lesion spans a few slices; the mean of the top few is less noisy than
    the max and not diluted by the many normal slices of a long series.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if slice_scores.ndim != 1 or slice_scores.numel() == 0:
        raise ValueError("slice_scores must be a non-empty 1-D tensor")
    k = min(top_k, slice_scores.numel())
    return slice_scores.topk(k).values.mean()

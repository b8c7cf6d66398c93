"""PatchCore-style anomaly maps from the segmenter's own encoder: no training, a memory of normal features.

Roth et al., "Towards total recall in industrial anomaly detection" (CVPR 2022): mid-level features of a
frozen network, each averaged over its 3 x 3 neighbourhood, the deeper level upsampled to the shallower
one's grid and concatenated; a memory bank of such vectors from normal images, thinned by a greedy
k-centre coreset; a location's anomaly is its distance to the nearest vector in the bank. Here the frozen
network is the liver segmenter's encoder (issue #13, item 3: a baseline that needs no training of its
own), so the features are those the segmenter sees.

Pure torch: ``encoder_blocks`` and ``local_features`` read a MONAI ``UNet``; ``greedy_coreset`` and
``nearest_distance`` work on any (N, D) features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

from models.segmenter import encoder_path


def encoder_blocks(unet: UNet) -> list[nn.Module]:
    """The down blocks of a MONAI UNet, shallowest first (``models.segmenter.encoder_path``)."""
    return encoder_path(unet)[0]


def local_features(unet: UNet, x: torch.Tensor, levels: tuple[int, ...] = (1, 2)) -> torch.Tensor:
    """(B, C_in, S, S) segmenter input -> (B, D, h, w) PatchCore features on the grid of ``levels[0]``.

    Level i is the output of down block i (stride 2^(i+1)); D is the sum of those blocks' channels. Only the
    encoder up to the deepest level runs (the decoder is not needed)."""
    blocks = encoder_blocks(unet)
    if not levels or min(levels) < 0 or max(levels) >= len(blocks):
        raise ValueError(f"levels must lie in 0..{len(blocks) - 1}, got {levels}")
    taps: list[torch.Tensor] = []
    h = x
    for i, block in enumerate(blocks[: max(levels) + 1]):
        h = block(h)  # (B, C_i, S / 2^(i+1), S / 2^(i+1))
        if i in levels:
            taps.append(F.avg_pool2d(h.float(), 3, stride=1, padding=1, count_include_pad=False))
    size = taps[0].shape[-2:]
    taps = [t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)
            for t in taps]  # fmt: skip
    return torch.cat(taps, dim=1)  # (B, D, h, w)


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(M, D) queries, (N, D) bank -> (M,) Euclidean distance of each query to its nearest bank vector."""
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1] or bank.shape[0] == 0:
        raise ValueError(f"need (M, D) queries and a non-empty (N, D) bank, got {tuple(queries.shape)}, "
                         f"{tuple(bank.shape)}")  # fmt: skip
    out = torch.empty(queries.shape[0], dtype=torch.float32)
    for start in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[start : start + chunk].float(), bank.float())  # (m, N)
        out[start : start + chunk] = d.min(dim=1).values
    return out


def greedy_coreset(features: torch.Tensor, n: int, seed: int = 0, projection: int = 128) -> torch.Tensor:
    """Indices (n,) of a greedy k-centre coreset of (N, D) features: each pick is the vector farthest from
    those already picked, measured (as PatchCore does, for speed) after a random projection to ``projection``
    dimensions; the first pick is drawn with ``seed``."""
    total = features.shape[0]
    if n >= total:
        return torch.arange(total)
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    gen = torch.Generator().manual_seed(seed)
    x = features.float()
    if x.shape[1] > projection:
        x = x @ (torch.randn(x.shape[1], projection, generator=gen) / projection**0.5)  # (N, projection)
    picks = torch.empty(n, dtype=torch.long)
    picks[0] = int(torch.randint(total, (1,), generator=gen))
    nearest = torch.linalg.vector_norm(x - x[picks[0]], dim=1)  # (N,) distance to the coreset so far
    for i in range(1, n):
        picks[i] = int(nearest.argmax())
        nearest = torch.minimum(nearest, torch.linalg.vector_norm(x - x[picks[i]], dim=1))
    return picks

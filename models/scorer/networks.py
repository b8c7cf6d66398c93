"""Generator, critic and encoder of the position-conditioned f-AnoGAN.

Architecture after Schlegl et al., "f-AnoGAN: Fast unsupervised anomaly
detection with generative adversarial networks", Medical Image Analysis 54
(2019), and its reference code (tSchlegl/f-AnoGAN): residual up-sampling
generator, residual down-sampling critic with layer norm (gradient penalty
forbids batch norm in the critic, Gulrajani et al. 2017), and an izi_f encoder
that mirrors the critic and ends in a linear layer and tanh.

Conditioning on the slice position (see ``models.body_position``):
- a Fourier-feature embedding of the scalar position (NaN = unknown position
  gets its own learned vector);
- generator: the embedding is concatenated to z and modulates every
  normalisation layer (FiLM, Perez et al. 2018);
- critic: projection term <embed(y), f(x)> (Miyato & Koyama 2018);
- encoder: the embedding is concatenated to the features before the last layer.
With ``conditional=False`` the same networks run without any of this.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.scorer.config import ScorerConfig


def channels(config: ScorerConfig) -> list[int]:
    """Channels at each resolution level, from image_size down to 4 x 4 (64 px: w, 2w, 4w, 8w, 8w)."""
    return [config.base_width * min(2**i, 8) for i in range(config.n_down + 1)]


class PositionEmbedding(nn.Module):
    """Scalar slice position (B,) -> (B, embed_dim); NaN maps to a learned 'unknown' vector."""

    freqs: torch.Tensor

    def __init__(self, n_fourier: int, embed_dim: int) -> None:
        super().__init__()
        if n_fourier < 1 or embed_dim < 1:
            raise ValueError(f"n_fourier and embed_dim must be >= 1, got {n_fourier}, {embed_dim}")
        # periods 4, 2, 1, ... in normalised units (1 unit = 300 mm from the lung base)
        self.register_buffer("freqs", math.pi / 2 * 2.0 ** torch.arange(n_fourier, dtype=torch.float32))
        self.mlp = nn.Sequential(nn.Linear(2 * n_fourier + 1, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.unknown = nn.Parameter(torch.zeros(embed_dim))

    def forward(self, position: torch.Tensor) -> torch.Tensor:
        unknown = torch.isnan(position)  # (B,)
        t = torch.where(unknown, torch.zeros_like(position), position).float()[:, None]  # (B, 1)
        angles = t * self.freqs[None]  # (B, n_fourier)
        feats = torch.cat([t, angles.sin(), angles.cos()], dim=1)  # (B, 2n + 1)
        emb = self.mlp(feats)  # (B, E)
        return torch.where(unknown[:, None], self.unknown[None].to(emb.dtype), emb)


class ConditionalNorm(nn.Module):
    """Group norm whose scale and shift come from the position embedding (FiLM), or are learned."""

    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8 if channels % 8 == 0 else 1, channels, affine=embed_dim == 0)
        self.film = nn.Linear(embed_dim, 2 * channels) if embed_dim else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.norm(x)  # (B, C, H, W)
        if self.film is None or emb is None:
            return h
        gamma, beta = self.film(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return h * (1 + gamma) + beta


class ResBlockUp(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = ConditionalNorm(c_in, embed_dim), ConditionalNorm(c_out, embed_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x, emb)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), emb)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlockDown(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, H/2, W/2), layer norm (GroupNorm with one group).

    As in the reference code: conv c_in -> c_in, then conv c_in -> c_out and mean-pool,
    so the widest convolution never runs at the block's input resolution twice.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(1, c_in), nn.GroupNorm(1, c_in)
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        return F.avg_pool2d(h, 2) + self.skip(F.avg_pool2d(x, 2))


class DownTrunk(nn.Module):
    """Shared body of critic and encoder: (B, C_in, S, S) -> feature map (B, 8w, 4, 4)."""

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        ch = channels(config)
        self.stem = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList(ResBlockDown(ch[i], ch[i + 1]) for i in range(config.n_down))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # (B, w, S, S)
        for block in self.blocks:
            h = block(h)
        return h  # (B, 8w, 4, 4)


class SliceConditionedGenerator(nn.Module):
    """G(z, position): (B, latent_dim), (B,) -> (B, in_channels, S, S) in [-1, 1]."""

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        ch = channels(config)
        emb_dim = config.embed_dim if config.conditional else 0
        self.embed = PositionEmbedding(config.n_fourier, config.embed_dim) if config.conditional else None
        self.fc = nn.Linear(config.latent_dim + emb_dim, ch[-1] * 16)
        self.blocks = nn.ModuleList(ResBlockUp(ch[i + 1], ch[i], emb_dim) for i in reversed(range(config.n_down)))
        self.norm_out = ConditionalNorm(ch[0], emb_dim)
        self.conv_out = nn.Conv2d(ch[0], config.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, position: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(position) if self.embed is not None and position is not None else None
        if self.embed is not None and emb is None:
            raise ValueError("a conditional generator needs a position (NaN for unknown)")
        zin = torch.cat([z, emb], dim=1) if emb is not None else z  # (B, latent + E)
        h = self.fc(zin).view(z.shape[0], -1, 4, 4)  # (B, 8w, 4, 4)
        for block in self.blocks:
            h = block(h, emb)  # doubles H, W
        return torch.tanh(self.conv_out(F.relu(self.norm_out(h, emb))))  # (B, C, S, S)


class SliceConditionedCritic(nn.Module):
    """D(x, position) -> (B,) score; ``features`` gives f(x), the last feature map (B, 8w, 4, 4)."""

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        feat_dim = channels(config)[-1] * 16
        self.trunk = DownTrunk(config)
        self.fc = nn.Linear(feat_dim, 1)
        self.embed = PositionEmbedding(config.n_fourier, config.embed_dim) if config.conditional else None
        self.project = nn.Linear(config.embed_dim, feat_dim, bias=False) if config.conditional else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)  # (B, 8w, 4, 4)

    def head(self, fmap: torch.Tensor, position: torch.Tensor | None) -> torch.Tensor:
        f = fmap.flatten(1)  # (B, F)
        out = self.fc(f)[:, 0]  # (B,)
        if self.embed is not None and self.project is not None:
            if position is None:
                raise ValueError("a conditional critic needs a position (NaN for unknown)")
            out = out + (self.project(self.embed(position)) * f).sum(1)
        return out

    def forward(self, x: torch.Tensor, position: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x), position)


class SliceConditionedEncoder(nn.Module):
    """E(x, position) -> z in (-1, 1)^latent_dim (izi_f encoder: critic-like trunk, linear, tanh)."""

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        feat_dim = channels(config)[-1] * 16
        self.trunk = DownTrunk(config)
        self.embed = PositionEmbedding(config.n_fourier, config.embed_dim) if config.conditional else None
        emb_dim = config.embed_dim if config.conditional else 0
        self.fc = nn.Linear(feat_dim + emb_dim, config.latent_dim)

    def forward(self, x: torch.Tensor, position: torch.Tensor | None = None) -> torch.Tensor:
        f = F.relu(self.trunk(x)).flatten(1)  # (B, F)
        if self.embed is not None:
            if position is None:
                raise ValueError("a conditional encoder needs a position (NaN for unknown)")
            f = torch.cat([f, self.embed(position)], dim=1)  # (B, F + E)
        return torch.tanh(self.fc(f))  # (B, latent)

"""DCGAN-style generator, critic and izi_f encoder on small patches, conditioned on position.

After Radford et al. 2016 (DCGAN), with the f-AnoGAN stages of Schlegl et al. 2019: G and D are trained
first, then an encoder E with G and D frozen (izi_f). Conditioning (``models.patch_gan.config.CONDITIONS``):
- a Fourier embedding of each condition (NaN: a learned 'unknown' vector for that condition);
- generator: embedding concatenated to z and FiLM on every group norm (Perez et al. 2018);
- critic: projection term <embed(c), f(x)> (Miyato & Koyama 2018);
- encoder: embedding concatenated before the last linear layer.
The critic has no normalisation layer (the gradient penalty forbids batch norm; spectral norm is its
own Lipschitz control).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from models.patch_gan.config import PatchGANConfig
from models.scorer.networks import ConditionalNorm as FiLMNorm  # group norm + FiLM, zero-initialised


class ConditionEmbedding(nn.Module):
    """(B, n) conditions -> (B, embed_dim); each NaN entry is replaced by that condition's learned vector."""

    freqs: torch.Tensor

    def __init__(self, n_conditions: int, n_fourier: int, embed_dim: int) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_fourier, dtype=torch.float32))
        self.n = n_conditions
        per = 2 * n_fourier + 1
        self.unknown = nn.Parameter(torch.zeros(n_conditions, per))
        self.mlp = nn.Sequential(nn.Linear(n_conditions * per, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        if cond.ndim != 2 or cond.shape[1] != self.n:
            raise ValueError(f"conditions must be (B, {self.n}), got {tuple(cond.shape)}")
        unknown = torch.isnan(cond)  # (B, n)
        t = torch.where(unknown, torch.zeros_like(cond), cond).float()[..., None]  # (B, n, 1)
        angles = t * self.freqs  # (B, n, F)
        feats = torch.cat([t, angles.sin(), angles.cos()], dim=-1)  # (B, n, 2F + 1)
        feats = torch.where(unknown[..., None], self.unknown.to(feats.dtype), feats)
        return self.mlp(feats.flatten(1))  # (B, E)


def _embedding(config: PatchGANConfig) -> ConditionEmbedding | None:
    if not config.conditional:
        return None
    return ConditionEmbedding(config.n_conditions, config.n_fourier, config.embed_dim)


def _embed(embed: ConditionEmbedding | None, cond: torch.Tensor | None) -> torch.Tensor | None:
    if embed is None:
        return None
    if cond is None:
        raise ValueError("a conditional network needs its conditions (NaN where unknown)")
    return embed(cond)


class PatchGenerator(nn.Module):
    """G(z, c): (B, latent), (B, n) -> (B, C, P, P) in [-1, 1]; transposed convs from 4 x 4."""

    def __init__(self, config: PatchGANConfig) -> None:
        super().__init__()
        ch = config.channels()[::-1]  # 32 px: 128, 64, 32
        emb = config.embed_dim if config.conditional else 0
        self.embed = _embedding(config)
        self.fc = nn.Linear(config.latent_dim + emb, ch[0] * 16)
        self.norms = nn.ModuleList(FiLMNorm(c, emb) for c in ch)
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(ch[i], ch[i + 1] if i + 1 < len(ch) else ch[-1], 4, 2, 1) for i in range(len(ch))
        )
        self.norm_out = FiLMNorm(ch[-1], emb)
        self.out = nn.Conv2d(ch[-1], config.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = _embed(self.embed, cond)
        h = self.fc(torch.cat([z, emb], 1) if emb is not None else z).view(z.shape[0], -1, 4, 4)  # (B, 4w, 4, 4)
        for norm, up in zip(self.norms, self.ups, strict=True):
            h = up(F.relu(norm(h, emb)))  # doubles H, W
        return torch.tanh(self.out(F.relu(self.norm_out(h, emb))))  # (B, C, P, P)


class DownTrunk(nn.Module):
    """(B, C, P, P) -> (B, 4w, 4, 4): strided 4 x 4 convs with leaky ReLU, optionally spectrally normalised."""

    def __init__(self, config: PatchGANConfig, sn: bool) -> None:
        super().__init__()
        ch = [config.in_channels, *config.channels()]
        wrap = spectral_norm if sn else (lambda m: m)
        self.convs = nn.ModuleList(wrap(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1)) for i in range(len(ch) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        return h  # (B, 4w, 4, 4) at 32 px


class PatchCritic(nn.Module):
    """D(x, c) -> (B,); ``features`` gives f(x), the last feature map (B, K, 4, 4) used by the score."""

    def __init__(self, config: PatchGANConfig) -> None:
        super().__init__()
        feat = config.channels()[-1] * 16
        wrap = spectral_norm if config.spectral_norm else (lambda m: m)
        self.trunk = DownTrunk(config, config.spectral_norm)
        self.fc = wrap(nn.Linear(feat, 1))
        self.embed = _embedding(config)
        self.project = wrap(nn.Linear(config.embed_dim, feat, bias=False)) if config.conditional else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def head(self, fmap: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        f = fmap.flatten(1)  # (B, F)
        out = self.fc(f)[:, 0]
        emb = _embed(self.embed, cond)
        if emb is not None and self.project is not None:
            out = out + (self.project(emb) * f).sum(1)
        return out  # (B,)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x), cond)


class PatchEncoder(nn.Module):
    """E(x, c) -> z in (-1, 1)^latent (izi_f: critic-like trunk, linear, tanh)."""

    def __init__(self, config: PatchGANConfig) -> None:
        super().__init__()
        feat = config.channels()[-1] * 16
        self.trunk = DownTrunk(config, sn=False)
        self.embed = _embedding(config)
        self.fc = nn.Linear(feat + (config.embed_dim if config.conditional else 0), config.latent_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        f = self.trunk(x).flatten(1)  # (B, F)
        emb = _embed(self.embed, cond)
        return torch.tanh(self.fc(torch.cat([f, emb], 1) if emb is not None else f))  # (B, latent)

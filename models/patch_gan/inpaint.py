"""Context-inpainting GAN: a U-Net fills a hidden square from its surroundings; a PatchGAN critic.

After pix2pix (Isola et al. 2017: U-Net generator, PatchGAN critic, L1 + adversarial loss) used as an
anomaly detector by inpainting (RIAD, Zavrtanik et al. 2021; context of MADGAN, Han et al. 2021): the
square is hidden in every input channel (the neighbouring slices too), so a lesion inside it cannot be
copied from the context. The anomaly map is the residual inside the square.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from models.patch_gan.config import PatchGANConfig
from models.patch_gan.networks import FiLMNorm, _embed, _embedding


def hole_mask(config: PatchGANConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, P, P) float, 1 inside the centred hidden square."""
    p, h = config.patch_size, config.hole
    m = torch.zeros(1, 1, p, p, device=device)
    lo = (p - h) // 2
    m[..., lo : lo + h, lo : lo + h] = 1.0
    return m


class InpaintGenerator(nn.Module):
    """(B, C, P, P) with the hole zeroed, plus the hole as a channel, and (B, n) conditions -> (B, C, P, P)."""

    def __init__(self, config: PatchGANConfig) -> None:
        super().__init__()
        ch = config.channels()  # 32 px, width 32: 32 (16²), 64 (8²), 128 (4²)
        emb = config.embed_dim if config.conditional else 0
        self.embed = _embedding(config)
        ins = [config.in_channels + 1, *ch[:-1]]
        self.downs = nn.ModuleList(nn.Conv2d(ins[i], ch[i], 4, 2, 1) for i in range(len(ch)))
        self.down_norms = nn.ModuleList(FiLMNorm(c, emb) for c in ch)
        # up i takes the deeper features (and, past the bottom, the skip of its level)
        ups_out = [*reversed(ch[:-1]), ch[0]]  # 32 px: 64 (8²), 32 (16²), 32 (32²)
        ups_in = [ch[-1]] + [ups_out[i - 1] + ch[-1 - i] for i in range(1, len(ch))]  # deeper + skip
        self.ups = nn.ModuleList(nn.ConvTranspose2d(i, o, 4, 2, 1) for i, o in zip(ups_in, ups_out, strict=True))
        self.up_norms = nn.ModuleList(FiLMNorm(o, emb) for o in ups_out)
        self.out = nn.Conv2d(ch[0] + config.in_channels + 1, config.in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, hole: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = _embed(self.embed, cond)
        inp = torch.cat([x * (1 - hole), hole.expand(x.shape[0], -1, -1, -1)], 1)  # (B, C + 1, P, P)
        skips, h = [], inp
        for conv, norm in zip(self.downs, self.down_norms, strict=True):
            h = F.leaky_relu(norm(conv(h), emb), 0.2)
            skips.append(h)
        for i, (up, norm) in enumerate(zip(self.ups, self.up_norms, strict=True)):
            if i > 0:
                h = torch.cat([h, skips[-1 - i]], 1)
            h = F.relu(norm(up(h), emb))
        filled = torch.tanh(self.out(torch.cat([h, inp], 1)))  # (B, C, P, P)
        return x * (1 - hole) + filled * hole  # outside the hole the input is kept


class PatchGANCritic(nn.Module):
    """(B, C, P, P), conditions -> (B, 4, 4) realness map (PatchGAN), spectrally normalised, projection-conditioned."""

    def __init__(self, config: PatchGANConfig) -> None:
        super().__init__()
        ch = [config.in_channels + 1, *config.channels()]
        self.convs = nn.ModuleList(spectral_norm(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1)) for i in range(len(ch) - 1))
        self.head = spectral_norm(nn.Conv2d(ch[-1], 1, 1))
        self.embed = _embedding(config)
        self.project = spectral_norm(nn.Linear(config.embed_dim, ch[-1], bias=False)) if config.conditional else None

    def forward(self, x: torch.Tensor, hole: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([x, hole.expand(x.shape[0], -1, -1, -1)], 1)
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        out = self.head(h)[:, 0]  # (B, 4, 4)
        emb = _embed(self.embed, cond)
        if emb is not None and self.project is not None:
            out = out + (self.project(emb)[:, :, None, None] * h).sum(1)
        return out

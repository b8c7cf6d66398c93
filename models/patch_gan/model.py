"""The three patch scorers as modules with one interface: ``patch_maps(x, cond) -> (map, weight)``.

``map`` (B, P, P) is each pixel's anomaly contribution for that patch; ``weight`` (B, P, P) says which
pixels the patch speaks for (all for f-AnoGAN and the autoencoder, the hidden square for inpainting).
``models.patch_gan.score`` averages overlapping patches into a slice heat-map with these weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.patch_gan.config import PatchGANConfig
from models.patch_gan.inpaint import InpaintGenerator, PatchGANCritic, hole_mask
from models.patch_gan.networks import PatchCritic, PatchEncoder, PatchGenerator


def fanogan_map(
    x: torch.Tensor, x_rec: torch.Tensor, f_x: torch.Tensor, f_rec: torch.Tensor, kappa: float
) -> torch.Tensor:
    """f-AnoGAN score map (Schlegl et al. 2019, eq. 6, per pixel): (B, C, P, P), (B, K, h, w) -> (B, P, P).

    pixel residual averaged over channels + kappa * critic-feature residual averaged over features,
    spread over the patch by nearest up-sampling; its mean over the patch is the paper's A(x).
    """
    pixel = ((x - x_rec) ** 2).mean(1)  # (B, P, P)
    feature = ((f_x - f_rec) ** 2).mean(1, keepdim=True)  # (B, 1, h, w)
    return pixel + kappa * F.interpolate(feature, size=x.shape[-2:], mode="nearest")[:, 0]


class PatchFAnoGAN(nn.Module):
    """Position-conditioned f-AnoGAN on patches: generator, critic and izi_f encoder."""

    def __init__(self, config: PatchGANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = PatchGenerator(config)
        self.critic = PatchCritic(config)
        self.encoder = PatchEncoder(config)

    def _cond(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        return cond if self.config.conditional else None

    def reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        c = self._cond(cond)
        return self.generator(self.encoder(x, c), c)  # (B, C, P, P)

    def patch_maps(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        x_rec = self.reconstruct(x, cond)
        heat = fanogan_map(x, x_rec, self.critic.features(x), self.critic.features(x_rec), self.config.kappa)
        return heat, torch.ones_like(heat)


class PatchInpainter(nn.Module):
    """Context inpainting: the residual inside the hidden centre square."""

    def __init__(self, config: PatchGANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = InpaintGenerator(config)
        self.critic = PatchGANCritic(config)

    def fill(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        hole = hole_mask(self.config, x.device).to(x.dtype)
        return self.generator(x, hole, cond if self.config.conditional else None), hole

    def patch_maps(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        filled, hole = self.fill(x, cond)
        heat = ((x - filled) ** 2).mean(1)  # (B, P, P), zero outside the hole
        return heat, hole[:, 0].expand_as(heat)


class PatchAutoencoder(nn.Module):
    """Baseline on the same patches: encoder trunk -> z -> unconditioned generator; score = squared residual."""

    def __init__(self, config: PatchGANConfig) -> None:
        super().__init__()
        self.config = config
        plain = PatchGANConfig(**{**config.as_json(), "conditional": False})
        self.encoder = PatchEncoder(plain)
        self.decoder = PatchGenerator(plain)

    def reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def patch_maps(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        heat = ((x - self.reconstruct(x)) ** 2).mean(1)
        return heat, torch.ones_like(heat)


class DeviationRule(nn.Module):
    """The training-free rule as a scorer: |HU - liver median| / MAD, smoothed (``models.patch_gan.score``).

    It has no weights; ``workers.inference.patch_scorer.heat_of_grid`` computes its map on the whole grid
    instead of patch by patch. A buffer gives it a device, so it loads, moves and registers like the others.
    """

    device_anchor: torch.Tensor

    def __init__(self, config: PatchGANConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("device_anchor", torch.zeros(1))

    def patch_maps(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError("the deviation rule maps whole slices (models.patch_gan.score.deviation_map), not patches")


PatchScorer = PatchFAnoGAN | PatchInpainter | PatchAutoencoder | DeviationRule


def build_patch_scorer(config: PatchGANConfig) -> PatchScorer:
    if config.detector == "deviation":
        return DeviationRule(config)
    if config.detector == "inpaint":
        return PatchInpainter(config)
    if config.detector == "autoencoder":
        return PatchAutoencoder(config)
    return PatchFAnoGAN(config)

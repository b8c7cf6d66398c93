"""The f-AnoGAN scorer module and a non-GAN baseline, anomalib style.

``forward`` returns training tensors in training mode and a typed
``ScorerPrediction`` in eval mode. Schlegl et al. 2019 (f-AnoGAN, izi_f).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.scorer.config import ScorerConfig
from models.scorer.networks import (
    DownTrunk,
    SliceConditionedCritic,
    SliceConditionedEncoder,
    SliceConditionedGenerator,
    channels,
)
from models.scorer.score import anomaly_map, reduce_map


@dataclass
class ScorerPrediction:
    slice_scores: torch.Tensor  # (B,) higher = more anomalous
    heatmaps: torch.Tensor  # (B, 1, H, W) per-pixel contributions; the score reduces this map
    reconstructions: torch.Tensor  # (B, C, H, W)


@dataclass
class ReconstructionOutput:
    x_rec: torch.Tensor  # (B, C, H, W) G(E(x))
    fmap_x: torch.Tensor  # (B, K, 4, 4) critic features f(x)
    fmap_rec: torch.Tensor  # (B, K, 4, 4) f(G(E(x)))


class FAnoGAN(nn.Module):
    """Position-conditioned f-AnoGAN: generator, critic and izi_f encoder."""

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = SliceConditionedGenerator(config)
        self.critic = SliceConditionedCritic(config)
        self.encoder = SliceConditionedEncoder(config)

    def _position(self, x: torch.Tensor, position: torch.Tensor | None) -> torch.Tensor | None:
        if not self.config.conditional:
            return None
        if position is None:
            return torch.full((x.shape[0],), float("nan"), device=x.device)  # unknown position
        return position

    def reconstruct(self, x: torch.Tensor, position: torch.Tensor | None = None) -> ReconstructionOutput:
        pos = self._position(x, position)
        x_rec = self.generator(self.encoder(x, pos), pos)  # (B, C, H, W)
        return ReconstructionOutput(x_rec, self.critic.features(x), self.critic.features(x_rec))

    def forward(
        self, x: torch.Tensor, position: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> ReconstructionOutput | ScorerPrediction:
        """x (B, C, S, S) in [-1, 1], position (B,) normalised (NaN unknown), valid (B, 1, S, S)."""
        out = self.reconstruct(x, position)
        if self.training:
            return out
        return self.predict_from(x, (out.x_rec, out.fmap_x, out.fmap_rec), valid)

    def graph_outputs(self, x: torch.Tensor, position: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The networks' part of scoring, E -> G -> D features: what a fast path compiles or runs in bf16."""
        out = self.reconstruct(x, position)
        return out.x_rec, out.fmap_x, out.fmap_rec

    def predict_from(
        self, x: torch.Tensor, outputs: tuple[torch.Tensor, ...], valid: torch.Tensor | None = None
    ) -> ScorerPrediction:
        """Heat-map and score from ``graph_outputs`` (kept out of the network so it can stay in fp32)."""
        x_rec, fmap_x, fmap_rec = outputs
        heat = anomaly_map(x, x_rec, fmap_x, fmap_rec, self.config.kappa)
        if valid is not None:
            heat = heat * valid
        scores = reduce_map(heat, valid, self.config.top_k_fraction)
        return ScorerPrediction(scores, heat, x_rec)


class ConvAutoencoder(nn.Module):
    """Baseline: a small convolutional autoencoder on the same inputs; score = residual.

    Same trunk as the critic, a bottleneck of ``latent_dim``, a generator-like
    decoder without conditioning. Heat-map = squared residual averaged over
    channels; score = its mean over valid pixels (or top-k fraction).
    """

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = DownTrunk(config)
        self.to_latent = nn.Linear(channels(config)[-1] * 16, config.latent_dim)
        decoder_config = ScorerConfig(**{**config.as_json(), "conditional": False})
        self.decoder = SliceConditionedGenerator(decoder_config)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        z = self.to_latent(F.relu(self.encoder(x)).flatten(1))  # (B, latent)
        return self.decoder(z)  # (B, C, S, S)

    def forward(
        self, x: torch.Tensor, position: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor | ScorerPrediction:
        """Training: reconstruction (B, C, S, S). Eval: ScorerPrediction. ``position`` is ignored."""
        x_rec = self.reconstruct(x)
        if self.training:
            return x_rec
        return self.predict_from(x, (x_rec,), valid)

    def graph_outputs(self, x: torch.Tensor, position: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The network's part of scoring (as ``FAnoGAN.graph_outputs``); ``position`` is ignored."""
        return (self.reconstruct(x),)

    def predict_from(
        self, x: torch.Tensor, outputs: tuple[torch.Tensor, ...], valid: torch.Tensor | None = None
    ) -> ScorerPrediction:
        (x_rec,) = outputs
        heat = ((x - x_rec) ** 2).mean(1, keepdim=True)  # (B, 1, S, S)
        if valid is not None:
            heat = heat * valid
        return ScorerPrediction(reduce_map(heat, valid, self.config.top_k_fraction), heat, x_rec)

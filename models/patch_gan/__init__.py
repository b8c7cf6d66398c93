"""Patch-level, position-conditioned anomaly scorers (pure torch): f-AnoGAN, context inpainting, autoencoder."""

from models.patch_gan.config import CONDITIONS, DETECTORS, PatchGANConfig
from models.patch_gan.model import PatchAutoencoder, PatchFAnoGAN, PatchInpainter, PatchScorer, build_patch_scorer

__all__ = [
    "CONDITIONS",
    "DETECTORS",
    "PatchAutoencoder",
    "PatchFAnoGAN",
    "PatchGANConfig",
    "PatchInpainter",
    "PatchScorer",
    "build_patch_scorer",
]

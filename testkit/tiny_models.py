"""Tiny scorer and segmenter trained on the committed sample study, for tests of the loop."""

from __future__ import annotations

from pathlib import Path

import torch

from app.cli.demo_models import SAMPLE_DIR, train_sample_scorer, train_sample_segmenter

SAMPLE_MASK = "totalseg-example/masks/liver-on-ct-dicom.nii.gz"
ALL_MANUAL, ALL_AUTO = -1e9, 1e9  # series thresholds that send every series one way
__all__ = [
    "ALL_AUTO",
    "ALL_MANUAL",
    "SAMPLE_DIR",
    "SAMPLE_MASK",
    "train_tiny_scorer",
    "train_tiny_segmenter",
    "with_series_threshold",
]


def train_tiny_scorer(run_dir: Path) -> Path:
    return train_sample_scorer(run_dir, width=4, latent=8, steps=2, batch=4, resume=False)


def train_tiny_segmenter(run_dir: Path) -> Path:
    return train_sample_segmenter(run_dir, width=4, steps=2, batch=2, resume=False)


def with_series_threshold(checkpoint: Path, threshold: float, out: Path) -> Path:
    """A copy whose calibration routes every series one way (tests of routing, not of calibration)."""
    ckpt = torch.load(checkpoint, weights_only=False)
    ckpt["metadata"].setdefault("calibration", {})["series_threshold"] = threshold
    torch.save(ckpt, out)
    return out

"""Tiny scorer and segmenter trained on the committed sample study, for tests of the loop."""

from __future__ import annotations

from pathlib import Path

import torch

from app.processes import ROOT

SAMPLE_DIR = ROOT / "samples"
SAMPLE_CT = "totalseg-example/ct-dicom"
SAMPLE_MASK = "totalseg-example/masks/liver-on-ct-dicom.nii.gz"


def train_tiny_scorer(run_dir: Path) -> Path:
    from models.scorer import ScorerConfig
    from models.transforms import PreprocessConfig
    from workers.pipelines.scorer_data import CaseSpec, ScorerDataConfig
    from workers.pipelines.scorer_training import ScorerTrainConfig, train_scorer

    data = ScorerDataConfig(data_dir=str(SAMPLE_DIR), cache_dir=str(run_dir / "cache"),
                            preprocess=PreprocessConfig(size=64, pixel_mm=6.0),
                            train=(CaseSpec("sample", SAMPLE_CT),),
                            heldout=(CaseSpec("sample", SAMPLE_CT),))  # fmt: skip
    model = ScorerConfig(base_width=4, latent_dim=8, embed_dim=8, n_fourier=4, n_critic=1)
    config = ScorerTrainConfig(model=model, data=data, batch_size=4, gan_steps=2, encoder_steps=2,
                               checkpoint_every=1, sample_every=100, log_every=1, bf16=False)  # fmt: skip
    return train_scorer(config, run_dir, resume=False)


def with_series_threshold(checkpoint: Path, threshold: float, out: Path) -> Path:
    """A copy whose calibration routes every series one way (tests of routing, not of calibration)."""
    ckpt = torch.load(checkpoint, weights_only=False)
    ckpt["metadata"].setdefault("calibration", {})["series_threshold"] = threshold
    torch.save(ckpt, out)
    return out


def train_tiny_segmenter(run_dir: Path) -> Path:
    from models.segmenter import SegmenterConfig
    from workers.pipelines.segmenter_data import MaskedCase, SegmenterDataConfig
    from workers.pipelines.segmenter_training import SegmenterTrainConfig, train_segmenter

    case = MaskedCase("sample", SAMPLE_CT, SAMPLE_MASK)
    data = SegmenterDataConfig(data_dir=str(SAMPLE_DIR), cache_dir=str(run_dir / "cache"), train=(case,), heldout=case)
    config = SegmenterTrainConfig(model=SegmenterConfig(channels=(4, 8, 16, 32, 64)), data=data, steps=2,
                                  batch_size=2, checkpoint_every=1, eval_every=2, log_every=1)  # fmt: skip
    return train_segmenter(config, run_dir, resume=False)

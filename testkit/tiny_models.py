"""Tiny scorer and segmenter trained on the committed sample study, for tests of the loop."""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pydicom
import torch

from app.cli.demo_models import SAMPLE_DIR, train_sample_scorer, train_sample_segmenter

SAMPLE_MASK = "totalseg-example/masks/liver-on-ct-dicom.nii.gz"
ALL_MANUAL, ALL_AUTO = -1e9, 1e9  # series thresholds that send every series one way
__all__ = [
    "ALL_AUTO",
    "ALL_MANUAL",
    "sample_visit",
    "SAMPLE_DIR",
    "SAMPLE_MASK",
    "train_tiny_scorer",
    "train_tiny_patch_scorer",
    "train_tiny_segmenter",
    "with_patch_calibration",
    "with_series_threshold",
]


# One training per kind and process: the rest are copies of its run folder. A tiny training is dominated by
# decoding the JPEG 2000 sample and drawing its figures (3.5-5 s), not by its 2 steps, and ~30 tests ask for
# one; every caller still gets a run folder of its own, which it may change.
_TRAINED: dict[str, tuple[Path, Path]] = {}


def _cached_run(kind: str, train: Callable[[Path], Path], run_dir: Path) -> Path:
    if kind not in _TRAINED:
        home = Path(tempfile.mkdtemp(prefix=f"gatekeeper-tiny-{kind}-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        _TRAINED[kind] = (home, train(home / "run"))
    home, checkpoint = _TRAINED[kind]
    shutil.copytree(home / "run", run_dir, dirs_exist_ok=True)
    return run_dir / checkpoint.relative_to(home / "run")


def train_tiny_scorer(run_dir: Path) -> Path:
    return _cached_run(
        "scorer", lambda d: train_sample_scorer(d, width=4, latent=8, steps=2, batch=4, resume=False), run_dir
    )


def train_tiny_segmenter(run_dir: Path) -> Path:
    return _cached_run(
        "segmenter", lambda d: train_sample_segmenter(d, width=4, steps=2, batch=2, resume=False), run_dir
    )


def train_tiny_patch_scorer(run_dir: Path) -> Path:
    """A patch f-AnoGAN of a few steps on the sample, calibrated to nothing yet (see ``with_patch_calibration``)."""
    from models.patch_gan import PatchGANConfig
    from workers.inference.patch_scorer import ScoringConfig
    from workers.training.patch_training import PatchTrainConfig, train

    model = PatchGANConfig(width=4, latent_dim=8, embed_dim=8, n_fourier=2)
    # windows a patch apart, not half a patch: the stack tests give it a segmenter that calls the whole body crop
    # liver, and a width-4 generator's transposed convolutions run at about 2 GFLOP/s on the CPU (PyTorch's
    # kernel for so few channels): 4x fewer windows took a 20-slice series from 8.9 s to 2.4 s of scoring
    config = PatchTrainConfig(model=model, train=("sample",), data_dir=str(SAMPLE_DIR), gan_steps=2, encoder_steps=2,
                              batch_size=8, log_every=1, checkpoint_every=2,
                              scoring=ScoringConfig(stride=32))  # fmt: skip
    return train(config, run_dir)


def with_patch_calibration(checkpoint: Path, series_threshold: float, out: Path) -> Path:
    """A patch scorer whose calibration routes every series one way, valid with any segmenter (reference masks)."""
    from workers.inference.liver_roi import ROI_KEY, LiverRoi

    ckpt = torch.load(checkpoint, weights_only=False)
    ckpt["metadata"]["calibration"] = {"threshold": series_threshold, "series_threshold": series_threshold}
    ckpt["metadata"][ROI_KEY] = LiverRoi(erosion_mm=2.0, reference_masks=True).as_json()
    torch.save(ckpt, out)
    return out


def with_series_threshold(checkpoint: Path, threshold: float, out: Path) -> Path:
    """A copy whose calibration routes every series one way (tests of routing, not of calibration)."""
    ckpt = torch.load(checkpoint, weights_only=False)
    ckpt["metadata"].setdefault("calibration", {})["series_threshold"] = threshold
    torch.save(ckpt, out)
    return out


def sample_visit(patient_id: str) -> tuple[str, str, list[bytes]]:
    """The sample study under new study, series and SOP UIDs (a new visit of ``patient_id`` each time)."""
    from app.client import read_files

    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    blobs = []
    for blob in read_files(SAMPLE_DIR / "totalseg-example" / "ct-dicom"):
        ds = pydicom.dcmread(io.BytesIO(blob))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, patient_id
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    return study, series, blobs

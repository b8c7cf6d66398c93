"""Training pipeline end to end on synthetic NIfTI cases: run folder, resume, load, score, fast path."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from models.scorer import ConvAutoencoder, FAnoGAN, ScorerConfig
from models.transforms import PreprocessConfig
from workers.inference.scorer import load_scorer, predict_slices, score_volume
from workers.training.scorer_data import CaseSpec, ScorerDataConfig, build_slice_set
from workers.training.scorer_training import ScorerTrainConfig, calibrate_checkpoint, train_scorer

TINY_MODEL = ScorerConfig(base_width=4, latent_dim=8, embed_dim=8, n_fourier=4, n_critic=1)


def _write_case(path: Path, seed: int, n: int = 16) -> None:
    """Body ellipse with lungs in the upper half, 64 x 64 at 5 mm, 4 mm slices, LPS NIfTI."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] * 5.0
    body = ((yy - 160) / 110) ** 2 + ((xx - 160) / 140) ** 2 < 1
    lungs = (((yy - 150) / 50) ** 2 + ((xx - 100) / 35) ** 2 < 1) | (
        ((yy - 150) / 50) ** 2 + ((xx - 220) / 35) ** 2 < 1
    )
    vol = np.where(body, 40.0, -1000.0)[None].repeat(n, 0) + rng.normal(0, 10, (n, 64, 64))
    vol[n // 2 :, lungs] = -850.0
    data = vol.transpose(2, 1, 0).astype(np.int16)  # (Z, Y, X) -> (X, Y, Z)
    nib.save(nib.Nifti1Image(data, np.diag([-5.0, -5.0, 4.0, 1.0])), str(path))


@pytest.fixture
def train_config(tmp_path: Path) -> ScorerTrainConfig:
    for i in range(3):
        _write_case(tmp_path / f"case{i}.nii.gz", seed=i)
    data = ScorerDataConfig(
        data_dir=str(tmp_path),
        cache_dir=str(tmp_path / "cache"),
        preprocess=PreprocessConfig(size=64, pixel_mm=6.0),
        train=(CaseSpec("a", "case0.nii.gz"), CaseSpec("b", "case1.nii.gz", ((2, 13),))),
        heldout=(CaseSpec("c", "case2.nii.gz"),),
    )
    return ScorerTrainConfig(
        model=TINY_MODEL, data=data, batch_size=4, gan_steps=2, encoder_steps=2,
        checkpoint_every=1, sample_every=2, log_every=1, bf16=False,
    )  # fmt: skip


def test_data_split_and_cache(train_config: ScorerTrainConfig) -> None:
    train = build_slice_set(train_config.data, "train", Path("."))
    assert len(train) == 16 + 12 and train.images.shape[1:] == (3, 64, 64)
    assert train.slice_indices[16] == 2 and set(train.cases) == {"a", "b"}
    assert torch.isfinite(train.positions).all()  # the phantom's lungs give a landmark
    assert len(list(Path(train_config.data.cache_dir).glob("*.npz"))) == 2
    again = build_slice_set(train_config.data, "train", Path("."))
    torch.testing.assert_close(again.images, train.images)


def test_train_resume_load_and_score(train_config: ScorerTrainConfig, tmp_path: Path) -> None:
    run = tmp_path / "run"
    final = train_scorer(train_config, run)
    assert (run / "config.json").exists() and list((run / "samples").glob("*.png"))
    more = ScorerTrainConfig(**{**train_config.__dict__, "gan_steps": 3})
    train_scorer(more, run, resume=True)
    gan_steps = [
        r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["phase"] == "gan"
    ]
    assert gan_steps == [1, 2, 3]  # resumed at step 2, did only step 3
    calibrated = calibrate_checkpoint(run / "checkpoints" / "latest.pt")
    assert load_scorer(calibrated)[1]["calibration"]["threshold"] > 0
    model, metadata = load_scorer(final)
    assert metadata["gan_step"] == 3 and metadata["encoder_step"] == 2
    assert metadata["calibration"]["target_fpr"] == 0.05
    assert metadata["data"]["n_slices"] == 28
    hu = np.asarray(nib.load(str(tmp_path / "case2.nii.gz")).dataobj, dtype=np.float32)  # type: ignore[attr-defined]
    hu = hu.transpose(2, 1, 0)  # LPS-stored (X, Y, Z) -> (Z, Y, X) as the DICOM loader gives
    result = score_volume(model, np.ascontiguousarray(hu), (5.0, 5.0), np.arange(16) * 4.0, metadata)
    assert result.slice_scores.shape == (16,) and result.heatmaps.shape == (16, 64, 64)
    assert result.landmark == "lung_base" and result.threshold is not None
    assert result.series_score >= np.median(result.slice_scores)


def test_fast_path_parity_with_eager_fp32() -> None:
    # channels_last + bf16 autocast against eager fp32: scores within 5 % relative (bf16 has 8 mantissa bits)
    model = FAnoGAN(ScorerConfig(base_width=8, latent_dim=16, embed_dim=8, n_fourier=4)).eval()
    x = torch.rand(6, 3, 64, 64) * 2 - 1
    pos = torch.linspace(-1, 1, 6)
    ref = predict_slices(model, x, pos, batch_size=4)
    fast = predict_slices(model, x, pos, batch_size=4, fast=True)
    torch.testing.assert_close(fast.slice_scores, ref.slice_scores, rtol=0.05, atol=1e-3)
    assert float((fast.heatmaps - ref.heatmaps).abs().mean() / ref.heatmaps.abs().mean()) < 0.05


def test_autoencoder_baseline_trains_and_loads(train_config: ScorerTrainConfig, tmp_path: Path) -> None:
    config = ScorerTrainConfig(**{**train_config.__dict__, "detector": "autoencoder", "encoder_steps": 3})
    final = train_scorer(config, tmp_path / "ae")
    model, metadata = load_scorer(final)
    assert isinstance(model, ConvAutoencoder) and metadata["encoder_step"] == 3
    assert metadata["calibration"]["threshold"] > 0


def test_bad_train_config_raises() -> None:
    with pytest.raises(ValueError):
        ScorerTrainConfig(detector="vae")
    with pytest.raises(ValueError):
        ScorerTrainConfig(batch_size=0)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_only_where_native(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """--bf16 (the default) must fall back to fp32 on a CPU without native bf16: emulated bf16 is slower."""
    from workers.inference import engine as scorer_fast
    from workers.training import scorer_training

    monkeypatch.setattr(scorer_fast, "cpu_has_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert scorer_training.uses_bf16(ScorerTrainConfig(bf16=True), cpu) is native
    assert scorer_training.uses_bf16(ScorerTrainConfig(bf16=False), cpu) is False
    conv = torch.nn.Conv2d(1, 1, 3)
    with scorer_training._autocast(ScorerTrainConfig(bf16=True), cpu):
        out = conv(torch.randn(1, 1, 8, 8))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)


def test_resuming_with_the_same_config_keeps_no_previous_config(tmp_path: Path) -> None:
    from workers.training.scorer_training import RunFolder

    folder = RunFolder(tmp_path / "run")
    folder.write_config(ScorerTrainConfig())  # holds tuples, which JSON gives back as lists
    folder.write_config(ScorerTrainConfig())
    assert not (tmp_path / "run" / "config.prev.json").exists()
    folder.write_config(ScorerTrainConfig(batch_size=8))
    assert json.loads((tmp_path / "run" / "config.prev.json").read_text())["batch_size"] == 32

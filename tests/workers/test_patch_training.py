"""Patch-scorer training on the committed sample: progress lines, checkpoints, resume, the scoring model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.patch_gan import PatchGANConfig
from testkit.tiny_models import SAMPLE_DIR
from workers.inference.checkpoint import read_checkpoint
from workers.inference.patch_scorer import load_patch_scorer
from workers.training.patch_calibration import conformal_threshold
from workers.training.patch_training import PatchTrainConfig, train

TINY = PatchGANConfig(width=4, latent_dim=8, embed_dim=8, n_fourier=2)


def config(steps: int, **kw: object) -> PatchTrainConfig:
    return PatchTrainConfig(model=kw.pop("model", TINY), train=("sample",), data_dir=str(SAMPLE_DIR),  # type: ignore[arg-type]
                            gan_steps=steps, encoder_steps=2, batch_size=8, log_every=1, checkpoint_every=1,
                            device="cpu", **kw)  # type: ignore[arg-type]  # fmt: skip


def test_training_logs_progress_checkpoints_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(config(2), run)
    first = read_checkpoint(run / "checkpoints" / "latest.pt")["metadata"]["steps"]
    assert first == {"gan": 2, "encoder": 2}
    final = train(config(4), run)  # the same folder, more steps: continues from step 2, not from 0
    lines = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines()]
    gan_steps = [x["step"] for x in lines if x["phase"] == "gan"]
    assert gan_steps == [1, 2, 3, 4]
    assert all({"steps_per_s", "eta_s", "of"} <= x.keys() for x in lines)
    meta = read_checkpoint(final)["metadata"]
    assert meta["kind"] == "patch-scorer" and meta["steps"]["gan"] == 4
    assert meta["licence_note"].startswith("trained only on data whose licence allows")
    model, _ = load_patch_scorer(final)
    x = torch.zeros(2, 3, 32, 32)
    heat, weight = model.patch_maps(x, torch.zeros(2, 4))
    assert heat.shape == (2, 32, 32)


@pytest.mark.parametrize("detector", ["inpaint", "autoencoder"])
def test_other_detectors_train(tmp_path: Path, detector: str) -> None:
    final = train(config(2, model=PatchGANConfig(**{**TINY.as_json(), "detector": detector})), tmp_path / detector)
    assert read_checkpoint(final)["metadata"]["steps"] == {("inpaint" if detector == "inpaint" else "ae"): 2}


def test_conformal_threshold() -> None:
    scores = torch.arange(1, 101, dtype=torch.float64).numpy()  # 1 .. 100
    assert conformal_threshold(scores, 0.05) == 96.0  # ceil(101 * 0.95) = 96th smallest
    assert conformal_threshold(scores[:10], 0.05) == 10.0  # too few scores: the largest
    with pytest.raises(ValueError):
        conformal_threshold(scores[:0], 0.05)


def test_calibration_refuses_a_patient_the_scorer_trained_on(tmp_path: Path) -> None:
    from workers.training.patch_calibration import calibrate

    final = train(config(1), tmp_path / "run")
    with pytest.raises(ValueError, match="never saw"):
        calibrate(final, ["sample"], SAMPLE_DIR, tmp_path / "calibrated.pt")
    assert not (tmp_path / "calibrated.pt").exists()

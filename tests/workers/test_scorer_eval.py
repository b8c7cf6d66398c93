"""evaluate-scorer's parts that need no real CT: the kappa ablation and the command's input checks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from models.scorer import FAnoGAN, ScorerConfig
from tests.conftest import ROOT
from tests.tiny_models import train_tiny_scorer
from workers.pipelines.scorer_eval import load_models


@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_scorer(tmp_path_factory.mktemp("eval") / "scorer")


def test_kappa_ablation_scores_the_pixel_residual_alone(tiny_scorer: Path) -> None:
    models, _ = load_models({"cond": tiny_scorer}, kappa_ablation=True)
    assert [m.label for m in models] == ["cond", "cond-k0"]
    full, k0 = models
    assert isinstance(full.net, FAnoGAN) and isinstance(k0.net, FAnoGAN)
    assert full.net.config.kappa == 1.0 and k0.net.config.kappa == 0.0  # the original is untouched
    assert k0.net.encoder is full.net.encoder and k0.net.generator is full.net.generator  # same weights
    assert "calibration" in full.metadata and "calibration" not in k0.metadata  # its threshold is recalibrated
    size = full.net.config.image_size
    x = torch.rand(3, 3, size, size) * 2 - 1
    pos = torch.tensor([-0.2, 0.0, 0.3])
    with torch.no_grad():
        rec = full.net.reconstruct(x, pos)
        pixel = ((x - rec.x_rec) ** 2).mean(1, keepdim=True)
        torch.testing.assert_close(k0.net(x, pos).heatmaps, pixel)
        assert bool((full.net(x, pos).heatmaps > pixel + 1e-6).any())  # kappa = 1 adds the feature term


def test_kappa_ablation_leaves_other_detectors_alone(tiny_scorer: Path) -> None:
    models, _ = load_models({"a": tiny_scorer}, kappa_ablation=False)
    assert [m.label for m in models] == ["a"]
    assert ScorerConfig().kappa == 1.0  # f-AnoGAN's default, which the ablation is measured against


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("no-label-here", "expected LABEL=PATH"),
        ("=x.pt", "expected LABEL=PATH"),
        ("a=/nonexistent/x.pt", "no such checkpoint file"),
    ],
)
def test_evaluate_scorer_refuses_bad_checkpoint_arguments(item: str, message: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(ROOT / ".venv/bin/gatekeeper"), "evaluate-scorer", "--checkpoint", item, "--out", str(tmp_path / "r")],
        env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and message in out.stdout + out.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was written

"""evaluate-scorer's parts that need no real CT: the kappa ablation and the command's input checks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from models.scorer import ConvAutoencoder, FAnoGAN, ScorerConfig
from testkit.tiny_models import train_tiny_scorer
from tests.conftest import ROOT
from workers.evaluation.scorer_eval import Model, comparisons_to_make, load_models
from workers.evaluation.scorer_metrics import auroc_difference_ci


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


def test_module_entry_point_refuses_what_the_cli_refuses(
    tiny_scorer: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from workers.evaluation.scorer_eval import main

    for args, message in [
        (["=x.pt"], "expected LABEL=PATH"),
        ([f"a={tiny_scorer}", f"a={tiny_scorer}"], "label 'a' given twice"),
        (["a=/nonexistent/x.pt"], "no such checkpoint file"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([arg for item in args for arg in ("--checkpoint", item)] + ["--out", str(tmp_path / "r")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_auroc_difference_resamples_tumours_for_both_models_at_once() -> None:
    rng = np.random.default_rng(0)
    tumours = np.repeat(np.arange(8), 10)
    base = rng.normal(size=80)
    same = auroc_difference_ci((base, base + 1.0), (base, base + 1.0), tumours)
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["n_groups"] == 8
    better = auroc_difference_ci((base, base + 5.0), (base, rng.normal(size=80)), tumours)
    assert better["difference"] > 0.3 and better["ci95"][0] > 0  # a perfect detector against chance
    worse = auroc_difference_ci((base, rng.normal(size=80)), (base, base + 5.0), tumours)
    assert worse["ci95"][1] < 0


def test_comparisons_pit_the_conditioned_model_against_both_baselines() -> None:
    tiny = {"base_width": 4, "latent_dim": 8, "embed_dim": 8, "n_fourier": 4}

    def model(label: str, net: torch.nn.Module, ablation_of: str | None = None, meta: dict | None = None) -> Model:
        return Model(label, Path(f"{label}.pt"), net, meta or {}, "view", ablation_of)  # type: ignore[arg-type]

    cond = model("cond", FAnoGAN(ScorerConfig(conditional=True, **tiny)))  # type: ignore[arg-type]
    models = [
        cond,
        model("uncond", FAnoGAN(ScorerConfig(conditional=False, **tiny))),  # type: ignore[arg-type]
        model("ae", ConvAutoencoder(ScorerConfig(conditional=False, **tiny))),  # type: ignore[arg-type]
        model("cond-k0", cond.net, ablation_of="cond"),
    ]
    assert comparisons_to_make(models) == [("cond-k0", "cond"), ("cond", "uncond"), ("cond", "ae")]
    # the same weights scored inside the liver are compared only with baselines scored there too
    liver = {"roi": {"kind": "liver", "erosion_mm": 3.0, "segmenter_sha256": "ab"}}
    models += [model(f"{m.label}-in-liver", m.net, meta=liver) for m in models[:3]]
    other_view = Model("ae-128", Path("ae-128.pt"), models[2].net, {}, "other view")
    assert comparisons_to_make(models + [other_view]) == [
        ("cond-k0", "cond"), ("cond", "uncond"), ("cond", "ae"),
        ("cond-in-liver", "uncond-in-liver"), ("cond-in-liver", "ae-in-liver"),
    ]  # fmt: skip

"""Shapes, hyper-parameter validation and conditioning of the scorer networks."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from models.scorer import ConvAutoencoder, FAnoGAN, ScorerConfig, ScorerPrediction
from models.scorer.networks import PositionEmbedding

TINY: dict[str, Any] = {"base_width": 4, "latent_dim": 16, "embed_dim": 8, "n_fourier": 4}


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("conditional", [True, False])
def test_output_shapes(size: int, conditional: bool) -> None:
    cfg = ScorerConfig(image_size=size, conditional=conditional, **TINY)
    model = FAnoGAN(cfg)
    x = torch.rand(2, 3, size, size) * 2 - 1
    pos = torch.tensor([0.2, float("nan")])
    assert model.generator(torch.randn(2, 16), pos).shape == (2, 3, size, size)
    assert model.critic(x, pos).shape == (2,)
    assert model.critic.features(x).shape == (2, 8 * 4, 4, 4)
    assert model.encoder(x, pos).shape == (2, 16)
    train_out = model.train()(x, pos)
    assert train_out.x_rec.shape == x.shape
    pred = model.eval()(x, pos, valid=torch.ones(2, 1, size, size, dtype=torch.bool))
    assert isinstance(pred, ScorerPrediction)
    assert pred.slice_scores.shape == (2,) and pred.heatmaps.shape == (2, 1, size, size)
    assert torch.isfinite(pred.slice_scores).all()


@pytest.mark.parametrize("size", [64, 128])
def test_baseline_autoencoder_shapes(size: int) -> None:
    model = ConvAutoencoder(ScorerConfig(image_size=size, **TINY))
    x = torch.rand(3, 3, size, size) * 2 - 1
    assert model.train()(x).shape == x.shape
    pred = model.eval()(x)
    assert pred.slice_scores.shape == (3,) and pred.heatmaps.shape == (3, 1, size, size)


@pytest.mark.parametrize(
    "bad",
    [
        {"image_size": 96},
        {"base_width": 0},
        {"latent_dim": 0},
        {"adversarial_loss": "vanilla"},
        {"gp_weight": -1.0},
        {"kappa": -0.1},
        {"n_critic": 0},
        {"top_k_fraction": 0.0},
        {"top_k_fraction": 1.5},
    ],
)
def test_bad_hyper_parameters_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        ScorerConfig(**bad)


def test_position_embedding_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        PositionEmbedding(0, 8)


def test_conditioning_changes_generator_output() -> None:
    gen = FAnoGAN(ScorerConfig(**TINY)).generator.eval()
    z = torch.randn(1, 16).expand(3, -1)
    out = gen(z, torch.tensor([-0.5, 0.5, float("nan")]))
    assert (out[0] - out[1]).abs().max() > 1e-4
    assert (out[0] - out[2]).abs().max() > 1e-4


def test_unconditioned_generator_ignores_position() -> None:
    gen = FAnoGAN(ScorerConfig(conditional=False, **TINY)).generator.eval()
    z = torch.randn(1, 16).expand(2, -1)
    out = gen(z, torch.tensor([-0.5, 0.5]))
    torch.testing.assert_close(out[0], out[1])


def test_conditional_generator_requires_position() -> None:
    gen = FAnoGAN(ScorerConfig(**TINY)).generator
    with pytest.raises(ValueError):
        gen(torch.randn(2, 16), None)

"""Losses, gradient penalty and the frozen-G/D encoder step."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from models.scorer import FAnoGAN, ScorerConfig
from models.scorer.losses import critic_loss, encoder_loss, generator_loss, gradient_penalty
from models.scorer.steps import critic_step, encoder_step, freeze_for_encoder, generator_step

TINY: dict[str, Any] = {"base_width": 4, "latent_dim": 16, "embed_dim": 8, "n_fourier": 4}


def test_gradient_penalty_of_linear_critic() -> None:
    # D(x) = w . x has gradient w everywhere, so GP = 10 * (||w|| - 1)^2 whatever alpha is.
    w = torch.randn(3, 8, 8)
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake, weight=10.0)
    expected = 10.0 * (w.norm() - 1) ** 2
    torch.testing.assert_close(gp, expected, rtol=1e-5, atol=1e-5)


def test_gradient_penalty_zero_for_unit_norm_critic() -> None:
    w = torch.randn(2, 4, 4)
    w = w / w.norm()
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4))
    assert float(gp) < 1e-8


def test_gradient_penalty_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        gradient_penalty(lambda x: x.sum((1, 2)), torch.zeros(2, 3, 3), torch.zeros(3, 3, 3))


def test_adversarial_losses_on_known_values() -> None:
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert float(critic_loss(real, fake, "wgan")) == pytest.approx(0.0 - 1.0)
    assert float(critic_loss(real, fake, "hinge")) == pytest.approx(0.5 + 1.0)
    assert float(critic_loss(real, fake, "ls")) == pytest.approx(0.5 * 1.0 + 0.5 * 1.0)
    assert float(generator_loss(fake, "wgan")) == pytest.approx(0.0)
    assert float(generator_loss(fake, "ls")) == pytest.approx(0.5 * 2.0)
    with pytest.raises(ValueError):
        critic_loss(real, fake, "other")


def test_encoder_loss_formula() -> None:
    x, xr = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    fx, fr = torch.zeros(1, 4), torch.ones(1, 4)
    assert float(encoder_loss(x, xr, fx, fr, kappa=0.5)) == pytest.approx(4.0 + 0.5)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("conditional", [True, False])
def test_encoder_step_leaves_generator_and_critic_unchanged(conditional: bool) -> None:
    model = FAnoGAN(ScorerConfig(conditional=conditional, **TINY))
    freeze_for_encoder(model)
    g0, d0, e0 = _snapshot(model.generator), _snapshot(model.critic), _snapshot(model.encoder)
    opt = torch.optim.RMSprop(model.encoder.parameters(), lr=1e-3)
    x, pos = torch.rand(2, 3, 64, 64) * 2 - 1, torch.tensor([0.1, -0.3])
    encoder_step(model, opt, x, pos)
    for name, value in _snapshot(model.generator).items():
        torch.testing.assert_close(value, g0[name], rtol=0, atol=0)
    for name, value in _snapshot(model.critic).items():
        torch.testing.assert_close(value, d0[name], rtol=0, atol=0)
    assert any((v - e0[k]).abs().max() > 0 for k, v in _snapshot(model.encoder).items())
    assert all(p.grad is None for p in model.generator.parameters())


def test_gan_steps_update_only_their_network() -> None:
    model = FAnoGAN(ScorerConfig(**TINY))
    opt_d = torch.optim.Adam(model.critic.parameters(), lr=1e-3, betas=(0.0, 0.9))
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=1e-3, betas=(0.0, 0.9))
    x, pos = torch.rand(2, 3, 64, 64) * 2 - 1, torch.tensor([0.1, -0.3])
    g0 = _snapshot(model.generator)
    stats = critic_step(model, opt_d, x, pos)
    assert set(stats) == {"d_loss", "gp", "w_dist"}
    assert all(torch.equal(v, g0[k]) for k, v in _snapshot(model.generator).items())
    d0 = _snapshot(model.critic)
    generator_step(model, opt_g, pos, batch=2)
    assert all(torch.equal(v, d0[k]) for k, v in _snapshot(model.critic).items())
    assert all(p.requires_grad for p in model.critic.parameters())

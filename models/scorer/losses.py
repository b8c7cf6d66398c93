"""Adversarial losses, gradient penalty and the izi_f encoder loss.

WGAN-GP: Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017.
Hinge: Lim & Ye 2017 / Miyato et al. 2018. Least squares: Mao et al., LSGAN, ICCV 2017
(a = 0 for fake, b = c = 1 for real). izi_f: Schlegl et al. 2019, eq. (5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from models.scorer.config import ADVERSARIAL_LOSSES


def _check(kind: str) -> None:
    if kind not in ADVERSARIAL_LOSSES:
        raise ValueError(f"adversarial loss must be one of {ADVERSARIAL_LOSSES}, got {kind!r}")


def critic_loss(real_out: torch.Tensor, fake_out: torch.Tensor, kind: str = "wgan") -> torch.Tensor:
    """Critic loss without the gradient penalty; real_out, fake_out (B,)."""
    _check(kind)
    if kind == "wgan":
        return fake_out.mean() - real_out.mean()
    if kind == "hinge":
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()
    return 0.5 * ((real_out - 1) ** 2).mean() + 0.5 * (fake_out**2).mean()


def generator_loss(fake_out: torch.Tensor, kind: str = "wgan") -> torch.Tensor:
    """Generator loss on the critic's output for generated images (B,)."""
    _check(kind)
    if kind == "ls":
        return 0.5 * ((fake_out - 1) ** 2).mean()
    return -fake_out.mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    weight: float = 10.0,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """weight * E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = alpha real + (1 - alpha) fake.

    ``critic`` maps (B, ...) to (B,) (bind the position with a closure); ``alpha``
    (B,) defaults to U(0, 1) per sample.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)}, {tuple(fake.shape)}")
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    a = alpha.view(-1, *([1] * (real.ndim - 1)))
    x_hat = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)  # (B,)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)  # (B,)
    return weight * ((norm - 1) ** 2).mean()


def encoder_loss(
    x: torch.Tensor, x_rec: torch.Tensor, f_x: torch.Tensor, f_rec: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """izi_f: MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x))))."""
    return F.mse_loss(x_rec, x) + kappa * F.mse_loss(f_rec, f_x)

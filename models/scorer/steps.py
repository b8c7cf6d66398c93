"""One optimisation step of each training stage (pure torch; the loop lives in workers/).

Stage 1 (WGAN-GP, Gulrajani et al. 2017): ``n_critic`` critic steps per
generator step. Stage 2 (izi_f, Schlegl et al. 2019): only the encoder learns;
G and D are frozen (requires_grad False, eval mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.scorer.losses import critic_loss, encoder_loss, generator_loss, gradient_penalty
from models.scorer.torch_model import ConvAutoencoder, FAnoGAN


def sample_latent(n: int, dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.randn(n, dim, device=device)


def critic_step(
    model: FAnoGAN, opt: torch.optim.Optimizer, x: torch.Tensor, pos: torch.Tensor | None
) -> dict[str, float]:
    """One critic update on a real batch x (B, C, S, S) at positions pos (B,)."""
    cfg = model.config
    pos = pos if cfg.conditional else None
    with torch.no_grad():
        fake = model.generator(sample_latent(x.shape[0], cfg.latent_dim, x.device), pos)
    real_out, fake_out = model.critic(x, pos), model.critic(fake, pos)
    adv = critic_loss(real_out, fake_out, cfg.adversarial_loss)
    gp = gradient_penalty(lambda t: model.critic(t, pos), x, fake, cfg.gp_weight) if cfg.gp_weight > 0 else adv * 0
    opt.zero_grad(set_to_none=True)
    (adv + gp).backward()
    opt.step()
    w_dist = float((real_out.mean() - fake_out.mean()).detach())
    return {"d_loss": float(adv.detach()), "gp": float(gp.detach()), "w_dist": w_dist}


def generator_step(
    model: FAnoGAN, opt: torch.optim.Optimizer, pos: torch.Tensor | None, batch: int
) -> dict[str, float]:
    """One generator update; positions are those of a real batch so G covers the data's positions."""
    cfg = model.config
    pos = pos if cfg.conditional else None
    device = next(model.parameters()).device
    for p in model.critic.parameters():
        p.requires_grad_(False)
    fake = model.generator(sample_latent(batch, cfg.latent_dim, device), pos)
    loss = generator_loss(model.critic(fake, pos), cfg.adversarial_loss)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    for p in model.critic.parameters():
        p.requires_grad_(True)
    return {"g_loss": float(loss.detach())}


def freeze_for_encoder(model: FAnoGAN) -> None:
    """Stage 2 set-up: G and D frozen (no gradients, eval mode), E trainable."""
    for net in (model.generator, model.critic):
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
    model.encoder.train()


def encoder_step(
    model: FAnoGAN, opt: torch.optim.Optimizer, x: torch.Tensor, pos: torch.Tensor | None
) -> dict[str, float]:
    """One izi_f update; ``opt`` must hold only encoder parameters."""
    cfg = model.config
    pos = pos if cfg.conditional else None
    x_rec = model.generator(model.encoder(x, pos), pos)
    loss = encoder_loss(x, x_rec, model.critic.features(x), model.critic.features(x_rec), cfg.kappa)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"e_loss": float(loss.detach())}


def autoencoder_step(model: ConvAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor) -> dict[str, float]:
    """One update of the baseline autoencoder: MSE(x, decoder(encoder(x)))."""
    model.train()
    loss = F.mse_loss(model.reconstruct(x), x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"ae_loss": float(loss.detach())}

"""One optimisation step of each patch scorer (pure torch; the loop and data live in workers/training).

- f-AnoGAN stage 1: ``n_critic`` critic steps (hinge with spectral norm, or WGAN-GP: Gulrajani et al.
  2017) per generator step; differentiable augmentation on everything the critic sees (DiffAugment,
  Zhao et al. 2020: translation and cutout), so that a few hundred slices do not let it memorise.
- f-AnoGAN stage 2 (izi_f): only the encoder learns; G and D are frozen.
- Inpainting: L1 on the hidden square + (1/100) adversarial hinge on a PatchGAN critic.
- Autoencoder: MSE.
- ``ema_update``: the exponential moving average of the generator that scoring uses.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from models.patch_gan.model import PatchAutoencoder, PatchFAnoGAN, PatchInpainter
from models.scorer.losses import gradient_penalty


def diff_augment(x: torch.Tensor, shift: float = 0.125, cutout: float = 0.25) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020), translation + cutout, differentiable in x: (B, C, P, P) -> same."""
    b, _, p, _ = x.shape
    s = max(1, int(p * shift))
    dy, dx = torch.randint(-s, s + 1, (2,)).tolist()  # one shift per batch: cheap, still random per step
    x = torch.roll(F.pad(x, (s, s, s, s), mode="replicate"), shifts=(dy, dx), dims=(2, 3))[:, :, s : s + p, s : s + p]
    c = int(p * cutout)
    cy = torch.randint(0, p - c + 1, (b, 1, 1))
    cx = torch.randint(0, p - c + 1, (b, 1, 1))
    ys, xs = torch.arange(p)[None, :, None], torch.arange(p)[None, None, :]
    keep = ~((ys >= cy) & (ys < cy + c) & (xs >= cx) & (xs < cx + c))  # (B, P, P)
    return x * keep[:, None].to(x.device, x.dtype)


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def _critic_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return _hinge_d(real, fake) if kind == "hinge" else fake.mean() - real.mean()


def _critic_at(model: PatchFAnoGAN, cond: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return model.critic(x, cond)


def sample_latent(n: int, dim: int, device: torch.device | str) -> torch.Tensor:
    return torch.randn(n, dim, device=device)


def gan_step(
    model: PatchFAnoGAN,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    augment: bool = True,
) -> dict[str, float]:
    """One generator step after ``len(batches)`` critic steps (one real batch (x, cond) each)."""
    cfg = model.config
    aug = diff_augment if augment else (lambda t: t)
    cond_of = (lambda c: c) if cfg.conditional else (lambda c: None)
    out: dict[str, float] = {}
    for x, cond in batches:
        c = cond_of(cond)
        with torch.no_grad():
            fake = model.generator(sample_latent(x.shape[0], cfg.latent_dim, x.device), c)
        real_out, fake_out = model.critic(aug(x), c), model.critic(aug(fake), c)
        loss = _critic_loss(cfg.adversarial_loss, real_out, fake_out)
        if cfg.gp_weight > 0:
            critic = functools.partial(_critic_at, model, c)
            loss = loss + gradient_penalty(critic, x, fake, cfg.gp_weight)
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        out = {"d_loss": float(loss.detach()), "d_gap": float((real_out.mean() - fake_out.mean()).detach())}
    x, cond = batches[-1]
    c = cond_of(cond)
    for p in model.critic.parameters():
        p.requires_grad_(False)
    fake = model.generator(sample_latent(x.shape[0], cfg.latent_dim, x.device), c)
    g_loss = -model.critic(aug(fake), c).mean()
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    for p in model.critic.parameters():
        p.requires_grad_(True)
    return {**out, "g_loss": float(g_loss.detach())}


def freeze_for_encoder(model: PatchFAnoGAN) -> None:
    """izi_f set-up: G and D frozen (no gradients, eval mode), E trainable."""
    for net in (model.generator, model.critic):
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
    model.encoder.train()


def encoder_step(model: PatchFAnoGAN, opt: torch.optim.Optimizer, x: torch.Tensor, cond: torch.Tensor) -> dict:
    """izi_f: MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x)))); ``opt`` holds only encoder parameters."""
    c = cond if model.config.conditional else None
    x_rec = model.generator(model.encoder(x, c), c)
    loss = F.mse_loss(x_rec, x) + model.config.kappa * F.mse_loss(
        model.critic.features(x_rec), model.critic.features(x)
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"e_loss": float(loss.detach())}


def inpaint_step(
    model: PatchInpainter,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    x: torch.Tensor,
    cond: torch.Tensor,
) -> dict[str, float]:
    """One critic and one generator update: L1 inside the hole + adversarial hinge / 100."""
    cfg = model.config
    c = cond if cfg.conditional else None
    filled, hole = model.fill(x, c)
    d_loss = _hinge_d(model.critic(x, hole, c), model.critic(filled.detach(), hole, c))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    for p in model.critic.parameters():
        p.requires_grad_(False)
    l1 = ((filled - x).abs() * hole).sum() / (hole.sum() * x.shape[0] * x.shape[1])
    adv = -model.critic(filled, hole, c).mean()
    loss = cfg.l1_weight * l1 + cfg.l1_weight / 100 * adv
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    for p in model.critic.parameters():
        p.requires_grad_(True)
    return {"d_loss": float(d_loss.detach()), "l1": float(l1.detach()), "g_adv": float(adv.detach())}


def autoencoder_step(model: PatchAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor) -> dict[str, float]:
    loss = F.mse_loss(model.reconstruct(x), x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"ae_loss": float(loss.detach())}


@torch.no_grad()
def ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * live, parameters and buffers (Karras et al.; nanoGPT-style)."""
    for e, p in zip(ema.parameters(), live.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)
    for eb, lb in zip(ema.buffers(), live.buffers(), strict=True):
        eb.copy_(lb)

"""Patch scorers: shapes, conditioning, the encoder stage, the score formula, sliding-window assembly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.patch_gan import PatchGANConfig, build_patch_scorer
from models.patch_gan.grid import GridConfig, liver_fraction, liver_grid, mask_to_grid, patch_conditions
from models.patch_gan.model import fanogan_map
from models.patch_gan.score import (
    assemble,
    deviation_map,
    extract_patches,
    pad_for_patches,
    scoring_region,
    slice_scores,
    window_corners,
)
from models.patch_gan.steps import diff_augment, ema_update, encoder_step, freeze_for_encoder, gan_step, inpaint_step
from models.scorer.losses import gradient_penalty

B = 4


def _batch(cfg: PatchGANConfig) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(B, cfg.in_channels, cfg.patch_size, cfg.patch_size) * 2 - 1, torch.rand(B, cfg.n_conditions)


@pytest.mark.parametrize("detector", ["fanogan", "inpaint", "autoencoder"])
@pytest.mark.parametrize("size", [32, 64])
def test_patch_maps_shapes(detector: str, size: int) -> None:
    cfg = PatchGANConfig(detector=detector, patch_size=size, width=8, hole=size // 2)
    model = build_patch_scorer(cfg).eval()
    x, c = _batch(cfg)
    heat, weight = model.patch_maps(x, c)
    assert heat.shape == weight.shape == (B, size, size)
    assert torch.isfinite(heat).all() and (heat >= 0).all()
    if detector == "inpaint":  # only the hidden square speaks
        assert weight.sum(dim=(1, 2)).eq(cfg.hole**2).all()


@pytest.mark.parametrize("detector", ["fanogan", "inpaint"])
def test_conditioning_changes_the_output(detector: str) -> None:
    cfg = PatchGANConfig(detector=detector, width=8)
    model = build_patch_scorer(cfg).eval()
    for p in model.parameters():  # FiLM starts at zero: give it weights so conditioning has an effect
        torch.nn.init.normal_(p, std=0.1) if p.ndim > 1 else None
    x, c = _batch(cfg)
    with torch.no_grad():
        a, _ = model.patch_maps(x, c)
        b, _ = model.patch_maps(x, c.flip(0))
        nan = torch.full_like(c, float("nan"))
        u, _ = model.patch_maps(x, nan)  # unknown conditions are valid input
    assert not torch.allclose(a, b)
    assert torch.isfinite(u).all()


def test_unconditioned_ignores_conditions() -> None:
    cfg = PatchGANConfig(width=8, conditional=False)
    model = build_patch_scorer(cfg).eval()
    x, c = _batch(cfg)
    with torch.no_grad():
        assert torch.equal(model.patch_maps(x, c)[0], model.patch_maps(x, c * 0 + 0.3)[0])


def test_gradient_penalty_known_case() -> None:
    # D(x) = sum(w * x) has gradient w everywhere: penalty = weight * (||w|| - 1)^2
    w = torch.full((1, 2, 2), 0.5)
    x = torch.zeros(3, 1, 2, 2)
    gp = gradient_penalty(lambda t: (t * w).flatten(1).sum(1), x, x + 1, weight=10.0)
    assert gp.item() == pytest.approx(10.0 * (1.0 - 1.0) ** 2, abs=1e-6)  # ||w|| = 1
    gp2 = gradient_penalty(lambda t: (t * 2 * w).flatten(1).sum(1), x, x + 1, weight=10.0)
    assert gp2.item() == pytest.approx(10.0, abs=1e-5)  # ||2w|| = 2


def test_wgan_gp_step_runs_and_moves_both_networks() -> None:
    cfg = PatchGANConfig(width=8, adversarial_loss="wgan", spectral_norm=False, n_critic=2, gp_weight=10.0)
    model = build_patch_scorer(cfg)
    og = torch.optim.Adam(model.generator.parameters(), 1e-3)
    od = torch.optim.Adam(model.critic.parameters(), 1e-3)
    g0 = [p.clone() for p in model.generator.parameters()]
    d0 = [p.clone() for p in model.critic.parameters()]
    stats = gan_step(model, og, od, [_batch(cfg), _batch(cfg)])
    assert {"d_loss", "g_loss"} <= stats.keys()
    assert any(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, model.critic.parameters(), strict=True))


def test_encoder_step_leaves_generator_and_critic_unchanged() -> None:
    cfg = PatchGANConfig(width=8)
    model = build_patch_scorer(cfg)
    freeze_for_encoder(model)
    opt = torch.optim.Adam(model.encoder.parameters(), 1e-3)
    g0 = {k: v.clone() for k, v in model.generator.state_dict().items()}
    d0 = {k: v.clone() for k, v in model.critic.state_dict().items()}
    e0 = [p.clone() for p in model.encoder.parameters()]
    encoder_step(model, opt, *_batch(cfg))
    assert all(torch.equal(v, model.generator.state_dict()[k]) for k, v in g0.items())
    assert all(torch.equal(v, model.critic.state_dict()[k]) for k, v in d0.items())
    assert any(not torch.equal(a, b) for a, b in zip(e0, model.encoder.parameters(), strict=True))


def test_inpaint_keeps_the_context_and_fills_the_hole() -> None:
    cfg = PatchGANConfig(detector="inpaint", width=8)
    model = build_patch_scorer(cfg)
    x, c = _batch(cfg)
    filled, hole = model.fill(x, c)
    assert torch.equal(filled * (1 - hole), x * (1 - hole))  # outside the hole: the input itself
    # the hole's content is not seen: changing it does not change the fill
    y = x.clone()
    lo, hi = (cfg.patch_size - cfg.hole) // 2, (cfg.patch_size + cfg.hole) // 2
    y[..., lo:hi, lo:hi] = -1.0
    assert torch.allclose(model.fill(y, c)[0] * hole, filled * hole)
    og = torch.optim.Adam(model.generator.parameters(), 1e-3)
    od = torch.optim.Adam(model.critic.parameters(), 1e-3)
    assert "l1" in inpaint_step(model, og, od, x, c)


def test_fanogan_map_is_the_paper_score_per_pixel() -> None:
    x, rec = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)
    fx, frec = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    heat = fanogan_map(x, rec, fx, frec, kappa=2.0)
    # mean over the patch = MSE(x, rec) + kappa * MSE(f(x), f(rec)) = 0.25 + 2 * 1
    assert heat.mean().item() == pytest.approx(0.25 + 2.0)


def test_ema_update() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.clone()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * before + 0.1 * b.weight)


def test_diff_augment_keeps_shape_and_gradients() -> None:
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and (x.grad == 0).any()  # cutout zeroes a square


def test_windows_cover_the_liver_and_assemble_averages() -> None:
    liver = torch.zeros(2, 40, 50, dtype=torch.bool)
    liver[0, 10:30, 10:40] = True
    corners = window_corners(liver, 16, 8)
    assert (corners[:, 0] == 0).all()  # no window on the slice without liver
    images = torch.arange(2 * 1 * 40 * 50, dtype=torch.float32).view(2, 1, 40, 50)
    patches = extract_patches(pad_for_patches(images, 16), corners, 16)
    k, y, x = corners[0].tolist()
    yy, xx = max(y, 0), max(x, 0)
    assert patches[0, 0, yy - y, xx - x] == images[k, 0, yy, xx]
    heat = assemble(torch.ones(len(corners), 16, 16), torch.ones(len(corners), 16, 16), corners, (2, 40, 50))
    assert heat[0][liver[0]].eq(1).all() and heat[1].eq(0).all()


def test_slice_scores_top_k_inside_region() -> None:
    heat = torch.zeros(2, 10, 10)
    heat[0, 0, 0] = 100.0  # outside the region: ignored
    heat[0, 5, 5] = 4.0
    region = torch.zeros(2, 10, 10, dtype=torch.bool)
    region[0, 3:8, 3:8] = True
    s = slice_scores(heat, region, top_k=2)
    assert s[0].item() == pytest.approx(2.0) and s[1].item() == 0.0


def test_liver_grid_centres_on_the_liver_median_and_conditions() -> None:
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 10, (12, 80, 80)).astype(np.float32) - 900
    liver = np.zeros(hu.shape, dtype=bool)
    liver[3:9, 20:60, 20:60] = True
    hu[liver] = 130.0
    g = liver_grid(hu, (0.8, 0.8), np.arange(12) * 1.6, liver, np.linspace(-0.5, 0.5, 12), GridConfig())
    assert g.liver_median_hu == pytest.approx(130.0)
    inner = scoring_region(g.liver, 3)[5]  # away from the edge, where resampling blends in the outside
    assert g.images[5, 1][inner].abs().max() < 1e-4  # liver at its own median -> 0
    frac = liver_fraction(liver)
    assert np.isnan(frac[0]) and frac[3] == 0 and frac[8] == 1
    cond = patch_conditions(g.conditions[[5]], torch.tensor([[0, 0]]), tuple(g.liver.shape[1:]))
    assert cond.shape == (1, 4) and cond[0, 2:].eq(0).all()
    assert mask_to_grid(liver[5], g.box).shape == g.liver.shape[1:]


def test_deviation_map_flags_a_dark_spot() -> None:
    images = torch.zeros(1, 3, 40, 40) + torch.randn(1, 3, 40, 40) * 0.02
    images[0, :, 18:24, 18:24] = -0.4
    liver = torch.ones(1, 40, 40, dtype=torch.bool)
    dev = deviation_map(images, liver)
    assert dev[0, 20, 20] > 5 * dev[0, 5, 5]


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        PatchGANConfig(patch_size=48)
    with pytest.raises(ValueError, match="detector"):
        PatchGANConfig(detector="vae")
    with pytest.raises(ValueError, match="hole"):
        PatchGANConfig(hole=30)


def test_bf16_fast_path_matches_fp32() -> None:
    """The worker's bf16 autocast path gives the same slice ranking and heat within bf16's precision."""
    from workers.inference.patch_scorer import ScoringConfig, score_grid

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    hu = rng.normal(110, 15, (8, 96, 96)).astype(np.float32)
    liver = np.zeros(hu.shape, dtype=bool)
    liver[1:7, 10:86, 10:86] = True
    hu[3, 40:50, 40:50] = 40.0  # a dark spot on one slice
    grid = liver_grid(hu, (0.8, 0.8), np.arange(8) * 1.6, liver, np.linspace(-0.3, 0.3, 8), GridConfig())
    model = build_patch_scorer(PatchGANConfig(width=8)).eval()
    fp32 = score_grid(model, grid, ScoringConfig(stride=8), 32, 1.0, bf16=False)
    bf16 = score_grid(model, grid, ScoringConfig(stride=8), 32, 1.0, bf16=True)
    inside = fp32.region
    rel = (bf16.heatmaps[inside] - fp32.heatmaps[inside]).abs().max() / fp32.heatmaps[inside].abs().max()
    assert rel < 0.05
    np.testing.assert_allclose(bf16.slice_scores, fp32.slice_scores, rtol=0.05, atol=1e-4)


def test_deviation_rule_scores_like_the_map_it_wraps() -> None:
    from workers.inference.patch_scorer import ScoringConfig, score_grid

    rng = np.random.default_rng(2)
    hu = rng.normal(110, 15, (6, 80, 80)).astype(np.float32)
    liver = np.zeros(hu.shape, dtype=bool)
    liver[1:5, 10:70, 10:70] = True
    hu[2, 35:45, 35:45] = 30.0
    grid = liver_grid(hu, (0.8, 0.8), np.arange(6) * 1.6, liver, np.full(6, np.nan), GridConfig())
    rule = build_patch_scorer(PatchGANConfig(detector="deviation"))
    assert list(rule.parameters()) == [] and len(list(rule.buffers())) == 1  # no weights, but a device
    a = score_grid(rule, grid, ScoringConfig())
    b = score_grid(None, grid, ScoringConfig())
    np.testing.assert_array_equal(a.slice_scores, b.slice_scores)
    assert int(np.argmax(a.slice_scores)) == 2

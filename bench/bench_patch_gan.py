"""What the patch scorers cost on this CPU: training steps/s of every design at its default, and scoring time.

    .venv/bin/python bench/bench_patch_gan.py --threads 2 --runs 3           # training steps/s
    .venv/bin/python bench/bench_patch_gan.py --scoring ../shared/data/ct/ircadb-07/ct-dicom \
        --mask ../shared/data/ct/ircadb-07/masks/liver.nii.gz --checkpoint models/weights/patch-fanogan.pt

Training: one *step* is what ``patch_training`` counts: for f-AnoGAN ``n_critic`` critic updates and one
generator update (with DiffAugment and the EMA update), for inpainting one critic and one generator
update, for the autoencoder one update; batch 64 of 32 x 32 x 3 random patches (the data do not change
the time). Designs run round-robin so that load drift hits them alike; figures are medians over runs.

Scoring: a series from its DICOM files to slice scores, split into reading the volume (shared with the
segmentation pass), the body position, the liver grid and the network over the sliding windows; the
series is repeated along z to ``--slices`` slices so that a 300-slice series can be timed from real data.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.patch_gan import PatchGANConfig, build_patch_scorer  # noqa: E402
from models.patch_gan.steps import autoencoder_step, ema_update, gan_step, inpaint_step  # noqa: E402

DESIGNS = {
    "f-AnoGAN hinge + spectral norm, 1 critic step (default)": PatchGANConfig(),
    "f-AnoGAN WGAN-GP, 5 critic steps, penalty 10 (Schlegl et al.)": PatchGANConfig(
        adversarial_loss="wgan", spectral_norm=False, n_critic=5, gp_weight=10.0
    ),
    "f-AnoGAN hinge + SN, width 32": PatchGANConfig(width=32),
    "context inpainting GAN (U-Net + PatchGAN, L1 + hinge)": PatchGANConfig(detector="inpaint"),
    "autoencoder baseline": PatchGANConfig(detector="autoencoder"),
}


def make_step(cfg: PatchGANConfig, batch: int):
    torch.manual_seed(0)
    model = build_patch_scorer(cfg)
    x = torch.rand(batch, cfg.in_channels, cfg.patch_size, cfg.patch_size) * 2 - 1
    c = torch.rand(batch, cfg.n_conditions)
    if cfg.detector == "autoencoder":
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        return lambda: autoencoder_step(model, opt, x)  # type: ignore[arg-type]
    ema = build_patch_scorer(cfg).generator  # type: ignore[union-attr]
    og = torch.optim.Adam(model.generator.parameters(), 2e-4, betas=(0.0, 0.9))  # type: ignore[union-attr]
    od = torch.optim.Adam(model.critic.parameters(), 4e-4, betas=(0.0, 0.9))  # type: ignore[union-attr]

    def step() -> None:
        if cfg.detector == "fanogan":
            gan_step(model, og, od, [(x, c)] * cfg.n_critic)  # type: ignore[arg-type]
        else:
            inpaint_step(model, og, od, x, c)  # type: ignore[arg-type]
        ema_update(ema, model.generator, 0.999)  # type: ignore[union-attr]

    return step


def bench_training(runs: int, steps: int, batch: int) -> None:
    trainers = {name: make_step(cfg, batch) for name, cfg in DESIGNS.items()}
    rates: dict[str, list[float]] = {name: [] for name in DESIGNS}
    for step in trainers.values():
        for _ in range(3):
            step()  # warm-up
    for _ in range(runs):
        for name, step in trainers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            rates[name].append(steps / (time.perf_counter() - t0))
    print(f"| design | steps/s (median of {runs}) | 10^4 steps |")
    print("|---|---|---|")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"| {name} | {med:.1f} ({min(r):.1f}-{max(r):.1f}) | {1e4 / med / 60:.0f} min |")


def bench_scoring(dicom: Path, mask: Path, checkpoint: Path, slices: int, runs: int) -> None:
    from models.body_position import find_body_position
    from workers.inference.patch_scorer import load_patch_scorer, score_series
    from workers.training.scorer_data import load_case_volume, load_nifti_volume

    model, meta = load_patch_scorer(checkpoint)
    liver0 = load_nifti_volume(mask).hu > 0.5
    times: dict[str, list[float]] = {"read DICOM": [], "body position": [], "grid + windows + network": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        vol = load_case_volume(dicom)
        t1 = time.perf_counter()
        reps = int(np.ceil(slices / vol.hu.shape[0]))
        hu = np.concatenate([vol.hu] * reps)[:slices]
        liver = np.concatenate([liver0] * reps)[:slices]
        dz = float(np.median(np.diff(vol.positions_mm)))
        positions = vol.positions_mm[0] + dz * np.arange(slices)
        t2 = time.perf_counter()
        body = find_body_position(hu, vol.pixel_spacing_mm, positions)
        t3 = time.perf_counter()
        out = score_series(model, meta, hu, vol.pixel_spacing_mm, positions, liver, body.normalised)
        t4 = time.perf_counter()
        times["read DICOM"].append((t1 - t0) * slices / vol.hu.shape[0])  # per slices read, scaled
        times["body position"].append(t3 - t2)
        times["grid + windows + network"].append(t4 - t3)
    n_liver = int(out.grid.liver_slices.sum())
    print(
        f"{slices} slices ({n_liver} with liver), {checkpoint.name}, "
        f"{torch.get_num_threads()} threads, median of {runs}:"
    )
    for k, v in times.items():
        print(f"  {k}: {statistics.median(v):.2f} s")
    scoring = statistics.median(times["body position"]) + statistics.median(times["grid + windows + network"])
    print(f"  scoring (all but reading): {scoring:.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--scoring", type=Path, help="a DICOM series folder: time scoring instead of training")
    p.add_argument("--mask", type=Path)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "weights" / "patch-fanogan.pt")
    p.add_argument("--slices", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.scoring:
        if args.mask is None:
            p.error("--scoring needs --mask (the liver mask on the series grid)")
        bench_scoring(args.scoring, args.mask, args.checkpoint, args.slices, args.runs)
    else:
        bench_training(args.runs, args.steps, args.batch)


if __name__ == "__main__":
    main()

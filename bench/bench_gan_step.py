"""Training-step benchmark of the f-AnoGAN's WGAN-GP stage: what a generator step costs on this CPU.

    .venv/bin/python bench/bench_gan_step.py --threads 1 --runs 5

One *iteration* is what ``train-scorer`` counts as a GAN step: ``n_critic`` (5) critic steps with the
gradient penalty (a double backward), then one generator step, at batch 16 on random inputs (the
data do not change the time). Configurations, run round-robin so that load drift hits them alike:

- image size 64 and 128, base width 8 and 16, conditional;
- fp32 in NCHW, fp32 in channels_last, bf16 autocast in channels_last (``train-scorer --bf16``,
  its default, and the worker's inference setting).

Figures are medians over the runs of iterations per second; ``x fp32`` is the median over rounds of
the configuration's time over the fp32 NCHW time of the same size and width in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.scorer import FAnoGAN, ScorerConfig  # noqa: E402
from models.scorer.steps import critic_step, generator_step  # noqa: E402

PRECISIONS = ("fp32", "fp32 channels_last", "bf16 channels_last")


class Trainer:
    """One model, its two optimisers and a fixed batch: ``iteration()`` is one GAN step."""

    def __init__(self, size: int, width: int, precision: str, batch: int) -> None:
        torch.manual_seed(0)
        self.config = ScorerConfig(image_size=size, base_width=width, conditional=True)
        self.model = FAnoGAN(self.config)
        self.channels_last = "channels_last" in precision
        self.bf16 = precision.startswith("bf16")
        self.x = torch.randn(batch, self.config.in_channels, size, size)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.pos = torch.rand(batch) - 0.5
        self.opt_d = torch.optim.Adam(self.model.critic.parameters(), 1e-4, betas=(0.0, 0.9))
        self.opt_g = torch.optim.Adam(self.model.generator.parameters(), 1e-4, betas=(0.0, 0.9))

    def iteration(self) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            for _ in range(self.config.n_critic):
                critic_step(self.model, self.opt_d, self.x, self.pos)
            generator_step(self.model, self.opt_g, self.pos, self.x.shape[0])

    def seconds(self, iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            self.iteration()
        return (time.perf_counter() - start) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="rounds over all configurations")
    parser.add_argument("--iterations", type=int, default=2, help="GAN steps timed per configuration and round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keys = [(s, w, p) for s in args.sizes for w in args.widths for p in PRECISIONS]
    trainers = {k: Trainer(*k, batch=args.batch) for k in keys}
    for trainer in trainers.values():
        trainer.iteration()  # warm-up: allocator, oneDNN primitives
    times: dict[tuple, list[float]] = {k: [] for k in keys}
    ratios: dict[tuple, list[float]] = {k: [] for k in keys}
    for run in range(args.runs):
        this_round = {k: trainers[k].seconds(args.iterations) for k in keys}
        for k, t in this_round.items():
            times[k].append(t)
            ratios[k].append(t / this_round[(k[0], k[1], "fp32")])
        print(f"round {run + 1}/{args.runs} done", file=sys.stderr)
    print(f"threads {args.threads}, batch {args.batch}, {args.runs} rounds x {args.iterations} GAN steps, medians")
    print("| size | width | precision | GAN steps/s | s per step | x fp32 (time) |")
    print("|---|---|---|---|---|---|")
    for k in keys:
        t = statistics.median(times[k])
        print(f"| {k[0]}^2 | {k[1]} | {k[2]} | {1 / t:.3f} | {t:.2f} | {statistics.median(ratios[k]):.2f} |")


if __name__ == "__main__":
    main()

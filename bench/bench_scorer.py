"""Scoring benchmark: a 300-slice series from reading the DICOM to slice scores, and its share of the matmul rate.

    .venv/bin/python bench/bench_scorer.py --threads 2 --runs 5

The series is ircadb-01 (129 slices) read with the service's loader, tiled along z
to 300 slices (the 20-slice sample without the data directory); reading is timed on
the real files and scaled to 300. Scoring is ``score_volume`` (body position,
preprocessing, the f-AnoGAN in batches of 32, heat-maps) with a randomly
initialised scorer of the given size (weights do not change the time), fp32 eager
and the fast path (channels_last + bf16 autocast). The model's share of the CPU's
fp32 matmul rate: FLOPs of one batch of 32 (torch's FlopCounterMode) over the
model's time, against a 2048^3 ``torch.mm`` measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.scorer import FAnoGAN, ScorerConfig  # noqa: E402
from models.transforms import PreprocessConfig  # noqa: E402
from workers.pipelines.scorer_inference import score_volume  # noqa: E402
from workers.pipelines.volume import load_series_volume  # noqa: E402

DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA_DIR", ROOT.parent / "shared" / "data"))


def matmul_gflops(n: int = 2048, runs: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def metadata(size: int, config: ScorerConfig) -> dict:
    pre = PreprocessConfig(size=size)
    return {"config": {"model": config.as_json(), "data": {"preprocess": pre.__dict__, "body_position": {}}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = DATA_DIR / "ct" / "ircadb-01" / "ct-dicom"
    folder = folder if folder.is_dir() else ROOT / "samples" / "totalseg-example" / "ct-dicom"
    paths = sorted(p for p in folder.iterdir() if p.is_file())
    read = []
    for _ in range(3):
        t0 = time.perf_counter()
        volume = load_series_volume(paths)
        read.append((time.perf_counter() - t0) * args.slices / len(paths))
    reps = -(-args.slices // volume.hu.shape[0])
    hu = np.concatenate([volume.hu] * reps)[: args.slices]
    step = volume.geometry.slice_spacing_mm
    positions = np.arange(args.slices) * step
    spacing = volume.geometry.pixel_spacing_mm
    peak = matmul_gflops()
    print("| view | width | path | read s (300) | score s, median | total s | slices/s | model GFLOP/s | % of mm |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in (64, 128):
        config = ScorerConfig(image_size=size, base_width=args.base_width)
        model, meta = FAnoGAN(config).eval(), metadata(size, config)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            x = torch.randn(32, 3, size, size)
            model(x, torch.zeros(32), torch.ones(32, 1, size, size, dtype=torch.bool))
        flops_per_slice = counter.get_total_flops() / 32
        for fast in (False, True):
            score_volume(model, hu[:32], spacing, positions[:32], meta, fast=fast)  # warm-up
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                score_volume(model, hu, spacing, positions, meta, fast=fast)
                times.append(time.perf_counter() - t0)
            score = statistics.median(times)
            total = statistics.median(read) + score
            rate = flops_per_slice * args.slices / score / 1e9
            print(f"| {size}^2 | {args.base_width} | {'bf16+channels_last' if fast else 'fp32 eager'} | "
                  f"{statistics.median(read):.2f} | {score:.2f} | {total:.2f} | {args.slices / total:.0f} | "
                  f"{rate:.0f} | {100 * rate / peak:.0f} |")  # fmt: skip
    print(f"\nfp32 torch.mm 2048^3: {peak:.0f} GFLOP/s on {args.threads} threads; load avg {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

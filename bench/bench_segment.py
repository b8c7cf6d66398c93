"""Benchmark: liver segmentation time for a 300-slice series on CPU (goal <= 3 s fp32 on 2 cores).

Times ``segment_volume`` end to end (in-plane resampling and neighbour slices,
the network in batches, probabilities back onto the 512 x 512 grid,
threshold) on a series of ``--slices`` slices, made by tiling a real series
along z (ircadb-01 when the data directory holds it) or, without data, a
synthetic body phantom. Weights do not change the time: without
``--checkpoint`` a randomly initialised network of the default config is used.
Prints one markdown table row (median and min of ``--runs`` timed runs after
one warm-up), the process CPU seconds and the load average, since other jobs share the cores.

    .venv/bin/python bench/bench_segment.py --threads 2 --runs 5
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

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.dicom.volume import SeriesGeometry, load_series_volume  # noqa: E402
from models.segmenter import LiverSegmenter, SegmenterConfig  # noqa: E402
from workers.inference.segmenter import load_segmenter, segment_volume  # noqa: E402


def phantom(n: int = 64, size: int = 512) -> tuple[np.ndarray, tuple[float, float]]:
    """An elliptic body of soft tissue with a brighter 'liver' on the patient's right, in air."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    body = ((yy - 256) / 170) ** 2 + ((xx - 256) / 230) ** 2 < 1
    liver = ((yy - 230) / 90) ** 2 + ((xx - 170) / 80) ** 2 < 1
    plane = np.where(body, 40.0, -1000.0) + np.where(liver, 60.0, 0.0)
    rng = np.random.default_rng(0)
    return (plane[None] + rng.normal(0, 15, (n, size, size))).astype(np.float32), (0.78, 0.78)


def series(n_slices: int, data_dir: Path) -> tuple[np.ndarray, SeriesGeometry, str]:
    folder = data_dir / "ct" / "ircadb-01" / "ct-dicom"
    if folder.is_dir():
        volume = load_series_volume(sorted(folder.iterdir()))
        hu, spacing, source = volume.hu, volume.geometry.pixel_spacing_mm, "ircadb-01 tiled"
    else:
        hu, spacing = phantom()
        source = "synthetic phantom"
    reps = -(-n_slices // hu.shape[0])
    hu = np.concatenate([hu, hu[::-1]] * reps)[:n_slices]  # mirrored tiling: no jump at the seams
    geometry = SeriesGeometry(
        n_slices=n_slices,
        rows=hu.shape[1],
        columns=hu.shape[2],
        pixel_spacing_mm=spacing,
        slice_spacing_mm=1.6,
        slice_positions_mm=[1.6 * i for i in range(n_slices)],
        orientation=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        origin_mm=[0.0, 0.0, 0.0],
    )
    return np.ascontiguousarray(hu), geometry, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--header", action="store_true", help="print the table header first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = Path(os.environ.get("GATEKEEPER_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    hu, geometry, source = series(args.slices, data_dir)
    if args.checkpoint:
        model, _ = load_segmenter(args.checkpoint)
        name = args.checkpoint.name
    else:
        model, name = LiverSegmenter(SegmenterConfig()).eval(), "random init"
    channels_last = not args.no_channels_last

    def once() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        segment_volume(model, hu, geometry, batch_size=args.batch_size, channels_last=channels_last)
        return time.perf_counter() - t0, time.process_time() - c0

    once()  # warm-up: allocator, oneDNN kernels
    runs = [once() for _ in range(args.runs)]
    times, cpu = [r[0] for r in runs], [r[1] for r in runs]
    pre = model.config.preprocess
    grid = f"{pre.size}px@{pre.pixel_mm}mm, ch {list(model.config.channels)}"
    if args.header:
        print("| series | slices | threads | batch | channels_last | model | median s | min s | CPU s | load avg |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {source} {hu.shape[1]}x{hu.shape[2]} | {args.slices} | {args.threads} | {args.batch_size} | "
        f"{channels_last} | {name}, {grid} | {statistics.median(times):.2f} | {min(times):.2f} | "
        f"{statistics.median(cpu):.2f} | {os.getloadavg()[0]:.2f} |"
    )


if __name__ == "__main__":
    main()

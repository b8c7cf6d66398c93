"""Training steps per second of the liver segmenter at candidate grids, on toy tensors (issue #14).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_segmenter_train.py --threads 1

One AdamW step of DiceCE on random (B, C, S, S) inputs, channels_last, fp32 (``--bf16``: also under bf16
autocast, as the folds train where bf16 is native); 3 warm-up steps, then the mean over ``--steps``. The
fold configuration (workers/training/segmenter_folds.py) was chosen from this.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from monai.losses import DiceCELoss

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.segmenter import LiverSegmenter, SegmenterConfig, default_grid  # noqa: E402

DESIGNS = [  # (size px, pixel mm, context, first width, batch)
    (160, 2.5, 1, 16, 16),  # the earlier default
    (192, 2.0, 1, 16, 16),
    (192, 2.0, 2, 16, 8),  # the folds' choice
    (160, 2.5, 1, 32, 16),
    (192, 2.0, 2, 32, 8),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="also time each design under bf16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precisions = (False, True) if args.bf16 else (False,)
    for (size, mm, context, width, batch), bf16 in ((d, p) for d in DESIGNS for p in precisions):
        config = SegmenterConfig(preprocess=replace(default_grid(), size=size, pixel_mm=mm), context=context,
                                 channels=tuple(width * 2**i for i in range(5)))  # fmt: skip
        model = LiverSegmenter(config).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        loss_fn = DiceCELoss(sigmoid=True, batch=True)
        x = torch.randn(batch, config.in_channels, size, size).contiguous(memory_format=torch.channels_last)
        y = (torch.rand(batch, 1, size, size) > 0.5).float()
        for i in range(3 + args.steps):
            if i == 3:
                t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        rate = args.steps / (time.perf_counter() - t0)
        precision = "bf16" if bf16 else "fp32"
        print(f"| {size} px at {mm} mm | context {context} | width {width} | batch {batch} | {precision} "
              f"| {rate:.2f} steps/s |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""The fused gate's compute, stage by stage, in one process: what ``bench_decision.py --region fused`` spends
inside the worker, without the service, the broker and the database around it (so with less noise).

The same calls the worker makes (``workers.serving.score`` and ``route.assess``) on ``ircadb-01`` (129
slices, the real series; the committed sample without the data directory): read the DICOM files, the
volume checks, the segmentation with its quality passes, the body position, the liver checks and the
shipped deviation scorer inside the mask. One warm-up, then ``--runs`` timed runs; the median per stage.

    .venv/bin/python bench/bench_fused_compute.py --threads 2 --runs 5 [--segmenter models/weights/segmenter.pt]

``--code DIR`` imports the gatekeeper packages from another checkout (a ``git worktree`` of an older commit),
so that two versions are compared in one session, on one CPU: run both, alternating. ``--segmenter-engine
compiled`` compiles the segmenter's network after loading (the worker's ``GATEKEEPER_SEGMENTER_ENGINE``) and
prints the Dice of its mask against the eager network's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--segmenter", type=Path, default=root / "models" / "weights" / "segmenter.pt")
    parser.add_argument("--code", type=Path, default=root, help="the checkout whose code runs (default: this one)")
    parser.add_argument("--segmenter-engine", choices=("auto", "compiled"), default="auto",
                        help="compiled: the segmenter's network torch.compile'd after loading (the worker's "
                        "GATEKEEPER_SEGMENTER_ENGINE); the mask is compared with the eager network's")  # fmt: skip
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    import torch

    from app.dicom.volume import load_series_volume
    from models.body_position import find_body_position
    from models.metrics import dice
    from workers.inference.quality import density_of, segment_with_quality
    from workers.inference.scorer import load_scorer, score_volume
    from workers.inference.segmenter import load_segmenter
    from workers.serving.input_checks import liver_doubt, volume_doubt

    torch.set_num_threads(args.threads)
    data_dir = Path(os.environ.get("GATEKEEPER_DATA_DIR", root.parent / "shared" / "data"))
    data = data_dir / "ct" / "ircadb-01" / "ct-dicom"
    folder = data if data.is_dir() else root / "samples" / "totalseg-example" / "ct-dicom"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    segmenter, seg_meta = load_segmenter(args.segmenter)
    eager_mask = None
    if args.segmenter_engine == "compiled":
        from workers.inference.segmenter_compile import compile_segmenter

        volume = load_series_volume(files)
        g = volume.geometry
        eager_mask = segment_with_quality(segmenter, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm).mask
        seconds = compile_segmenter(segmenter)
        if seconds is None:
            raise SystemExit("the segmenter did not compile (see the log); nothing to measure")
        print(f"segmenter compiled in {seconds:.1f} s")
    scorer, scorer_meta = load_scorer(root / "models" / "weights" / "deviation.pt")
    settings = SimpleNamespace(partial_liver_coverage="refuse")  # the default policy: refusals are not accepted

    def once() -> dict[str, float]:
        t = [time.perf_counter()]
        volume = load_series_volume(files)
        t.append(time.perf_counter())
        volume_doubt(volume)
        t.append(time.perf_counter())
        g = volume.geometry
        quality = segment_with_quality(segmenter, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm,
                                       density=density_of(seg_meta))  # fmt: skip
        t.append(time.perf_counter())
        body = find_body_position(volume.hu, g.pixel_spacing_mm, g.slice_positions_mm)
        t.append(time.perf_counter())
        liver_doubt(settings, volume, quality.mask, scorer_meta, seg_meta, series_id=0, body=body)  # type: ignore[arg-type]
        t.append(time.perf_counter())
        score_volume(scorer, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, scorer_meta, fast=True,
                     liver=quality.mask, body=body)  # fmt: skip
        t.append(time.perf_counter())
        names = ("read", "volume checks", "segment + quality", "body position", "liver checks", "score")
        return {n: b - a for n, a, b in zip(names, t[:-1], t[1:], strict=True)}

    once()  # warm-up: first-call allocations, the scorer's fast path
    if eager_mask is not None:
        volume = load_series_volume(files)
        g = volume.geometry
        mask = segment_with_quality(segmenter, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm).mask
        print(f"compiled against eager mask: Dice {float(dice(mask.astype(bool), eager_mask.astype(bool))):.5f}")
    runs = [once() for _ in range(args.runs)]
    medians = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
    total = statistics.median(sum(r.values()) for r in runs)
    stages = " | ".join(f"{name} {s:.2f}" for name, s in medians.items())
    code = args.code.resolve().name + (" (segmenter compiled)" if eager_mask is not None else "")
    print(f"| {code} | {len(files)} slices | {args.threads} threads | {stages} | total {total:.2f} s "
          f"| load avg {os.getloadavg()[0]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

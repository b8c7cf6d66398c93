"""Scoring benchmark: a 300-slice series from reading the DICOM files to slice scores, per inference path.

    .venv/bin/python bench/bench_scorer.py --threads 2 --runs 3
    .venv/bin/python bench/bench_scorer.py --threads 1 --sizes 64 --base-width 16

The series: ircadb-01 (129 slices) written out again as 300 files (positions continued along z,
new SOP Instance UIDs; the 20-slice sample without the data directory), read with the worker's
loader (``load_series_volume``) and scored with ``score_volume`` (body position, preprocessing,
the network in batches of 32, heat-maps and scores in fp32) and a randomly initialised scorer of
the given width (weights do not change the time). Paths, run round-robin so that load drift hits
them alike:

- ``fp32 eager``: the reference (``predict_slices``, what training evaluates with);
- ``fp32 compiled``: torch.compile (inductor), channels_last, the plan of a CPU without native bf16;
- ``fp32 onnxruntime``: the E -> G -> D graph exported to ONNX, run by ONNX Runtime (if installed);
- ``bf16 eager`` and ``bf16 compiled``: autocast bf16 + channels_last (CPUs with native bf16 only);
  ``bf16 eager`` is what the worker's ``auto`` engine serves; ``bf16 compiled`` is its ``compiled`` engine.

Share of the matmul rate: the network's FLOPs (torch's FlopCounterMode) for a batch of 32 over
the network's time for that batch, against a 2048^3 fp32 ``torch.mm`` timed in every round.
Figures are medians over the runs; ``x fp32`` is the median over rounds of the path's total
over the eager fp32 total of the same round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.dicom.volume import load_series_volume  # noqa: E402
from models.body_position import BodyPositionConfig, find_body_position  # noqa: E402
from models.scorer import FAnoGAN, ScorerConfig, ScorerPrediction  # noqa: E402
from models.transforms import body_view, preprocess_series  # noqa: E402
from workers.inference.engine import FastScorer, Plan, cpu_has_bf16, gflop_per_slice  # noqa: E402
from workers.inference.scorer import predict_slices, score_volume  # noqa: E402

DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA_DIR", ROOT.parent / "shared" / "data"))
Predictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], ScorerPrediction]


def write_series(folder: Path, n: int) -> list[Path]:
    """The real series tiled to ``n`` files along z: new positions and UIDs, the same pixels."""
    source = DATA_DIR / "ct" / "ircadb-01" / "ct-dicom"
    source = source if source.is_dir() else ROOT / "samples" / "totalseg-example" / "ct-dicom"
    datasets = [pydicom.dcmread(p) for p in sorted(source.iterdir()) if p.is_file()]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    step = float(np.median(np.diff(z)))
    paths = []
    for k in range(n):
        ds = datasets[k % len(datasets)]
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z[0] + k * step]
        ds.InstanceNumber, ds.SOPInstanceUID = k + 1, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        paths.append(folder / f"{k:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def matmul_gflops(n: int = 2048, runs: int = 3, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


class OrtScorer:
    """ONNX Runtime on the exported E -> G -> D graph; heat-maps and scores as the torch paths."""

    def __init__(self, model: torch.nn.Module, threads: int, folder: Path, batch_size: int = 32) -> None:
        import onnxruntime as ort

        class Graph(torch.nn.Module):
            def __init__(self, net: torch.nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return self.net.graph_outputs(x, pos)  # type: ignore[operator]

        self.model, self.batch_size = model, batch_size
        size = int(model.config.image_size)  # type: ignore[union-attr, arg-type]
        x, pos = torch.zeros(batch_size, 3, size, size), torch.zeros(batch_size)
        path = folder / f"scorer-{size}.onnx"
        t0 = time.perf_counter()
        torch.onnx.export(Graph(model), (x, pos), str(path), input_names=["x", "pos"], dynamo=True, verbose=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.prepare_s = time.perf_counter() - t0

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None) -> ScorerPrediction:
        scores, heats, recs = [], [], []
        for start in range(0, images.shape[0], self.batch_size):
            x, n = images[start : start + self.batch_size].float(), min(self.batch_size, images.shape[0] - start)
            pos = positions[start : start + n].float()
            xp, pp = torch.zeros(self.batch_size, *x.shape[1:]), torch.zeros(self.batch_size)  # the one static shape
            xp[:n], pp[:n] = x, pos
            outputs = self.session.run(None, {"x": xp.numpy(), "pos": pp.numpy()})
            v = None if valid is None else valid[start : start + n]
            pred = self.model.predict_from(x, tuple(torch.from_numpy(o[:n]) for o in outputs), v)  # type: ignore[operator]
            scores.append(pred.slice_scores)
            heats.append(pred.heatmaps)
            recs.append(pred.reconstructions)
        return ScorerPrediction(torch.cat(scores), torch.cat(heats), torch.cat(recs))


def build_paths(
    model: torch.nn.Module, threads: int, folder: Path, wanted: list[str]
) -> dict[str, tuple[Predictor, float]]:
    """name -> (predictor, seconds to prepare it: compile or export, warm-up included)."""
    out: dict[str, tuple[Predictor, float]] = {"fp32 eager": (lambda i, p, v: predict_slices(model, i, p, v), 0.0)}
    plans = {"fp32 compiled": Plan("cpu", None, True, True)}
    if cpu_has_bf16():
        plans |= {
            "bf16 eager": Plan("cpu", torch.bfloat16, True, False),
            "bf16 compiled": Plan("cpu", torch.bfloat16, True, True),
        }
    for name, plan in plans.items():
        if name not in wanted:
            continue
        t0 = time.perf_counter()
        scorer = FastScorer(model, plan)
        if plan.compile and not scorer.wait_compiled():
            print(f"  {name}: compile failed ({scorer.compile_error}), skipped", flush=True)
            continue
        out[name] = (scorer.predict, time.perf_counter() - t0)
    if "fp32 onnxruntime" in wanted:
        try:
            ort_scorer = OrtScorer(model, threads, folder)
            out["fp32 onnxruntime"] = (ort_scorer, ort_scorer.prepare_s)
        except ImportError:
            print("  fp32 onnxruntime: onnxruntime not installed, skipped", flush=True)
    return out


def time_batch(predict: Predictor, images: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor) -> float:
    predict(images, positions, valid)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        predict(images, positions, valid)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_size(size: int, args: argparse.Namespace, files: list[Path], folder: Path) -> None:
    config = ScorerConfig(image_size=size, base_width=args.base_width)
    torch.manual_seed(0)
    model = FAnoGAN(config).eval()
    pre_config = body_view(size)
    meta = {"config": {"model": config.as_json(), "data": {"preprocess": pre_config.as_json(), "body_position": {}}}}
    gflop = gflop_per_slice(model)
    paths = build_paths(model, args.threads, folder, args.paths)
    volume = load_series_volume(files)
    g = volume.geometry
    # stage times once (they do not depend on the path), and one batch of 32 real slices for the network rate
    t0 = time.perf_counter()
    position = find_body_position(volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, BodyPositionConfig())
    t1 = time.perf_counter()
    pre = preprocess_series(volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, pre_config)
    t2 = time.perf_counter()
    mid = slice(len(files) // 2 - 16, len(files) // 2 + 16)
    batch = (pre.images[mid], torch.as_tensor(position.normalised[mid], dtype=torch.float32), pre.valid[mid])
    reference = score_volume(model, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, meta)
    rows: dict[str, dict[str, list[float]]] = {
        name: {"read": [], "score": [], "total": [], "ratio": []} for name in paths
    }
    net: dict[str, list[float]] = {name: [] for name in paths}
    mm = []
    for _ in range(args.runs):
        mm.append(matmul_gflops())
        for name, (predict, _) in paths.items():
            t0r = time.perf_counter()
            vol = load_series_volume(files)
            t1r = time.perf_counter()
            score_volume(model, vol.hu, g.pixel_spacing_mm, g.slice_positions_mm, meta, predictor=predict)
            t2r = time.perf_counter()
            rows[name]["read"].append(t1r - t0r)
            rows[name]["score"].append(t2r - t1r)
            rows[name]["total"].append(t2r - t0r)
            net[name].append(time_batch(predict, *batch))
        for name in paths:
            rows[name]["ratio"].append(rows[name]["total"][-1] / rows["fp32 eager"]["total"][-1])
    peak = statistics.median(mm)
    print(f"\n{size}^2, base width {args.base_width}, {gflop:.2f} GFLOP/slice; body position {t1 - t0:.2f} s, "
          f"preprocessing {t2 - t1:.2f} s ({len(files)} slices, once); fp32 torch.mm {peak:.0f} GFLOP/s")  # fmt: skip
    print(
        "| view | width | threads | path | prepare s | read s | score s | total s | x fp32 | slices/s "
        "| net ms/32 | net GFLOP/s | % of fp32 mm | max rel err |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (predict, prepare) in paths.items():
        r = {k: statistics.median(v) for k, v in rows[name].items()}
        t_net = statistics.median(net[name])
        rate = gflop * 32 / t_net
        scores = score_volume(model, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, meta, predictor=predict)
        err = float(np.max(np.abs(scores.slice_scores - reference.slice_scores) / np.abs(reference.slice_scores)))
        print(f"| {size}^2 | {args.base_width} | {args.threads} | {name} | {prepare:.1f} | {r['read']:.2f} | "
              f"{r['score']:.2f} | {r['total']:.2f} | {r['ratio']:.2f} | {len(files) / r['total']:.0f} | "
              f"{1000 * t_net:.0f} | {rate:.0f} | {100 * rate / peak:.0f} | {err:.1e} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base-width", type=int, default=32, help="32: train-scorer's default (the product)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    every = ["fp32 eager", "fp32 compiled", "fp32 onnxruntime", "bf16 eager", "bf16 compiled"]
    parser.add_argument("--paths", nargs="+", default=every, choices=every)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_bf16()}, "
          f"threads {args.threads}; load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gk-bench-scorer-") as tmp:
        folder = Path(tmp)
        (folder / "series").mkdir()
        files = write_series(folder / "series", args.slices)
        for size in args.sizes:
            bench_size(size, args, files, folder)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

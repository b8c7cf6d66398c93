"""Fast scorer inference for the worker: device, precision and engine chosen once per loaded model.

What each engine does (``Settings.scorer_engine``; measured in bench/bench_scorer.py, BENCHMARKS.md):
- ``auto`` (default): CUDA when present (channels_last, autocast bf16, fp16 where bf16 is missing). On
  the CPU, autocast bf16 where the CPU has native bf16 (AVX512-BF16 or AMX, as oneDNN reports it), else
  fp32; channels_last; eager.
- ``compiled``: the same, with the network (E -> G -> D features) compiled by torch.compile when the
  model is first used, before it serves (10-70 s on 2 cores, once per model version and process).
  1.03-1.28x faster than ``auto`` here in bf16 (BENCHMARKS.md). It used to compile in a background
  thread while eager served: on 2026-11-22 (torch 2.13) that hung evaluate-gate twice for good, one
  thread inside dynamo tracing and the other inside an eager autocast call, so compilation now never
  overlaps inference, and it is not the default.
- ``eager``: ``auto``, kept as a name for configurations written before ``compiled`` existed.
- ``fp32``: eager fp32 on the CPU, the reference (``predict_slices(fast=False)``, what training uses).
Heat-maps and scores are always computed in fp32 from the network outputs (``predict_from``).

One ``FastScorer`` per loaded model object, and the model cache keeps one model per version, so
the compiled graph is built once per model version and worker process. A compile that fails (no
C compiler in the image, an unsupported op) is logged and eager stays in use.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.scorer import ScorerConfig, ScorerPrediction

log = logging.getLogger(__name__)

ENGINES = ("auto", "compiled", "eager", "fp32")
# Below this many FLOPs per slice the network takes < 0.2 s per 300 slices in eager bf16 and a
# compile (10-70 s of CPU) would take hundreds of series to pay back (the demo and test models).
COMPILE_MIN_GFLOP_PER_SLICE = 0.5
Graph = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]  # (x, position) -> network outputs


@dataclass(frozen=True)
class Plan:
    device: str  # "cpu" | "cuda"
    autocast: torch.dtype | None  # None: fp32
    channels_last: bool
    compile: bool

    def describe(self) -> str:
        precision = "fp32" if self.autocast is None else str(self.autocast).removeprefix("torch.")
        engine = "compiled" if self.compile else "eager"
        return f"{self.device} {precision} {engine}{' channels_last' if self.channels_last else ''}"


def cpu_has_bf16() -> bool:
    """Native bf16 matmul/convolution in oneDNN (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_is_native(device: torch.device) -> bool:
    """bf16 autocast runs natively here: CUDA with bf16, or a CPU with AVX512-BF16/AMX.

    On other CPUs (the AVX2-only AMD EPYC this project also meets, for one) bf16 is emulated and slower than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def _config(model: torch.nn.Module) -> ScorerConfig:
    return cast(ScorerConfig, model.config)


def gflop_of(fn: Callable[..., object], *inputs: torch.Tensor) -> float:
    """FLOPs of one call of ``fn`` on ``inputs`` (torch's FlopCounterMode, no autograd), in GFLOP."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    return counter.get_total_flops() / 1e9


def gflop_per_slice(model: torch.nn.Module) -> float:
    """FLOPs of ``graph_outputs`` for one slice, in GFLOP."""
    config = _config(model)
    x = torch.zeros(1, config.in_channels, config.image_size, config.image_size)
    return gflop_of(model.graph_outputs, x, torch.zeros(1))  # type: ignore[arg-type]


def choose_plan(model: torch.nn.Module, engine: str = "auto") -> Plan:
    if engine not in ENGINES:
        raise ValueError(f"scorer engine must be one of {ENGINES}, got {engine!r}")
    if engine == "fp32":
        return Plan("cpu", None, channels_last=False, compile=False)
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return Plan("cuda", dtype, channels_last=True, compile=False)
    worth = engine == "compiled" and gflop_per_slice(model) >= COMPILE_MIN_GFLOP_PER_SLICE
    return Plan("cpu", torch.bfloat16 if cpu_has_bf16() else None, channels_last=True, compile=worth)


class FastScorer:
    """Batched scoring of one model under a ``Plan``; works on its own copy of the model."""

    def __init__(self, model: torch.nn.Module, plan: Plan, batch_size: int = 32) -> None:
        self.plan, self.batch_size = plan, batch_size
        net = copy.deepcopy(model).eval().to(plan.device)
        self.net = net.to(memory_format=torch.channels_last) if plan.channels_last else net  # type: ignore[call-overload]
        self._eager = self._graph(self.net)
        self.compiled: Graph | None = None  # set once the compile and a warm-up call have run
        self.compile_s: float | None = None
        self.compile_error: str | None = None
        if plan.compile:
            self._compile()  # here, before the first batch: never beside an inference (see the docstring)

    def _graph(self, net: torch.nn.Module) -> Graph:
        plan = self.plan

        def graph(x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with torch.autocast(plan.device, dtype=plan.autocast or torch.float32, enabled=plan.autocast is not None):
                return net.graph_outputs(x, pos)  # type: ignore[operator]

        return graph

    def _compile(self) -> None:
        t0 = time.perf_counter()
        try:
            fn = torch.compile(self._graph(copy.deepcopy(self.net)), dynamic=False)
            config = _config(self.net)
            x = torch.zeros(self.batch_size, config.in_channels, config.image_size, config.image_size)
            with torch.inference_mode():
                fn(*self._inputs(x, torch.zeros(self.batch_size), pad=True))  # the one static shape
        except Exception as exc:  # noqa: BLE001 - any compiler failure leaves the eager path in use
            self.compile_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("scorer: torch.compile failed, eager %s stays in use: %s", self.plan.describe(), exc)
            return
        self.compile_s = time.perf_counter() - t0
        self.compiled = cast(Graph, fn)
        log.info("scorer: compiled %s in %.1f s", self.plan.describe(), self.compile_s)

    def wait_compiled(self) -> bool:
        """For benchmarks and tests: True if the network was compiled (False: eager is in use)."""
        return self.compiled is not None

    def _inputs(self, x: torch.Tensor, pos: torch.Tensor, pad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs on the device; ``pad``: zero slices up to ``batch_size`` (the compiled graph's one shape)."""
        missing = self.batch_size - x.shape[0]
        if pad and missing > 0:
            x = torch.cat([x, x.new_zeros((missing, *x.shape[1:]))])
            pos = torch.cat([pos, pos.new_zeros(missing)])
        # always fresh copies, made under inference_mode as in the warm-up call: the compiled graph's
        # guards check the tensors' dispatch keys, and a caller's normal tensor would force a recompile
        memory_format = torch.channels_last if self.plan.channels_last else torch.contiguous_format
        x = x.to(self.plan.device, memory_format=memory_format, copy=True)
        return x, pos.to(self.plan.device, dtype=torch.float32, copy=True)

    @torch.inference_mode()
    def predict(
        self, images: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> ScorerPrediction:
        """(N, C, S, S), (N,), (N, 1, S, S) -> scores, heat-maps and reconstructions in fp32 on the CPU."""
        scores, heats, recs = [], [], []
        for start in range(0, images.shape[0], self.batch_size):
            x = images[start : start + self.batch_size].float()
            n = x.shape[0]
            compiled = self.compiled
            graph = compiled if compiled is not None else self._eager
            outputs = graph(*self._inputs(x, positions[start : start + n], pad=compiled is not None))
            outputs = tuple(o[:n].float() for o in outputs)
            v = None if valid is None else valid[start : start + n].to(self.plan.device)
            pred = self.net.predict_from(x.to(self.plan.device), outputs, v)  # type: ignore[operator]
            scores.append(pred.slice_scores.cpu())
            heats.append(pred.heatmaps.cpu())
            recs.append(pred.reconstructions.cpu())
        return ScorerPrediction(torch.cat(scores), torch.cat(heats), torch.cat(recs))


_SCORERS: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[str, int], FastScorer]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def fast_scorer(model: torch.nn.Module, engine: str = "auto", batch_size: int = 32) -> FastScorer:
    """The ``FastScorer`` of this model object, engine and batch size, built (compile started) on first use."""
    with _LOCK:
        per_model = _SCORERS.setdefault(model, {})
        if (engine, batch_size) not in per_model:
            plan = choose_plan(model, engine)
            per_model[engine, batch_size] = FastScorer(model, plan, batch_size)
            log.info("scorer engine %s: %s", engine, plan.describe())
        return per_model[engine, batch_size]

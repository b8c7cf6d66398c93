"""The segmenter's network compiled by torch.compile (``Settings.segmenter_engine = "compiled"``).

One graph per loaded model object (the worker's model cache keeps one per version): logits and bottleneck
features (``LiverSegmenter.forward_with_features``, written without hooks so that it traces whole) for one
static batch shape, under the autocast the eager path uses (bf16 where native, else fp32). A last, partial
batch runs eager (padded to the static shape, it cost more than the graph saved). On an AVX512-BF16 EPYC with
2 threads, 128 slices of 192^2 took 0.33 s compiled against 0.44 s eager in bf16, but the whole quality pass
of a 129-slice series only 5-8 % less (1.13-1.18 s against 1.22-1.26 s; BENCHMARKS.md): it is not the default.
The compile itself took 17-24 s.

The compile runs when the model is loaded, before its first series, never beside an inference (a background
compile of the scorer hung the process twice; ``workers.inference.engine``). A compile that fails (no C++
compiler in the image, an unsupported op) is logged and the eager network stays in use. Networks below
``COMPILE_MIN_GFLOP_PER_SLICE`` (the demo's and the tests' tiny models) are not worth a compile.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable

import torch

from models.segmenter import LiverSegmenter
from workers.inference.engine import COMPILE_MIN_GFLOP_PER_SLICE, bf16_is_native, gflop_of

log = logging.getLogger(__name__)

ENGINES = ("auto", "compiled")
Graph = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # (B, C, S, S) -> (logits, features)
_COMPILED: weakref.WeakKeyDictionary[LiverSegmenter, tuple[Graph, int]] = weakref.WeakKeyDictionary()


def gflop_per_slice(model: LiverSegmenter) -> float:
    """FLOPs of one slice through the network, in GFLOP."""
    size = model.config.preprocess.size
    return gflop_of(model, torch.zeros(1, model.config.in_channels, size, size, device=next(model.parameters()).device))


def compile_segmenter(model: LiverSegmenter, batch_size: int = 32) -> float | None:
    """Compile ``model``'s network for batches of ``batch_size`` and run it once; the seconds it took, or None
    when the compile failed (logged: the eager network stays in use). The model must be in eval mode."""
    device = next(model.parameters()).device
    model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    size = model.config.preprocess.size
    t0 = time.perf_counter()
    try:
        graph = torch.compile(model.forward_with_features, dynamic=False)
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16_is_native(device)):
            x = torch.zeros(batch_size, model.config.in_channels, size, size, device=device)
            graph(x.contiguous(memory_format=torch.channels_last))  # the one static shape
    except Exception as exc:  # noqa: BLE001 - any compiler failure leaves the eager path in use
        log.warning("segmenter: torch.compile failed, the eager network stays in use: %s", str(exc)[:500])
        return None
    _COMPILED[model] = (graph, batch_size)
    seconds = time.perf_counter() - t0
    log.info("segmenter: compiled for batches of %d in %.1f s", batch_size, seconds)
    return seconds


def compile_if_worth(model: LiverSegmenter, engine: str) -> float | None:
    """``compile_segmenter`` under the ``compiled`` engine, for a network big enough to pay the compile back."""
    if engine not in ENGINES:
        raise ValueError(f"segmenter engine must be one of {ENGINES}, got {engine!r}")
    if engine != "compiled" or gflop_per_slice(model) < COMPILE_MIN_GFLOP_PER_SLICE:
        return None
    return compile_segmenter(model)


def compiled_graph(model: LiverSegmenter, batch_size: int) -> Graph | None:
    """The compiled network of ``model`` if it was compiled for batches of ``batch_size``, else None."""
    found = _COMPILED.get(model)
    return found[0] if found is not None and found[1] == batch_size else None

"""The segmenter's compiled engine (workers.inference.segmenter_compile) against its eager network.

Tolerances: in fp32 the compiled graph differs from eager only in summation order (probabilities within
1e-4); under bf16 autocast (where the CPU has it natively) inductor fuses and rounds differently, so the
probabilities are compared within 2e-2 and the thresholded masks must agree on 99 % of pixels.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from models.segmenter import LiverSegmenter, SegmenterConfig, fold_batchnorm
from models.transforms import PreprocessConfig
from workers.inference import segmenter_compile
from workers.inference.engine import bf16_is_native
from workers.inference.segmenter import model_grid_probabilities, model_grid_probabilities_and_features
from workers.inference.segmenter_compile import compile_if_worth, compile_segmenter, compiled_graph

needs_compiler = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("g++") is None, reason="inductor needs a C++ compiler"
)


def _model(seed: int = 0) -> LiverSegmenter:
    torch.manual_seed(seed)
    config = SegmenterConfig(preprocess=PreprocessConfig(size=32, pixel_mm=8.0), channels=(4, 8, 16),
                             strides=(2, 2), context=1, head_channels=2)  # fmt: skip
    model = LiverSegmenter(config)
    model.train()
    with torch.no_grad():  # running statistics that are not the identity, so folding them matters
        model(torch.randn(16, 3, 32, 32))
    model.eval()
    fold_batchnorm(model)
    return model


@needs_compiler
def test_compiled_segmenter_matches_eager_on_full_and_partial_batches_and_never_recompiles() -> None:
    eager, model = _model(), _model()
    assert compile_segmenter(model, batch_size=8) is not None
    assert compiled_graph(model, 8) is not None and compiled_graph(model, 16) is None
    images = torch.rand(19, 3, 32, 32) * 2 - 1  # 8 + 8 through the graph, the last 3 eager
    ref_prob, ref_feat = model_grid_probabilities_and_features(eager, images, batch_size=8)
    prob, feat = model_grid_probabilities_and_features(model, images, batch_size=8)
    tol = 2e-2 if bf16_is_native(torch.device("cpu")) else 1e-4
    np.testing.assert_allclose(prob, ref_prob, atol=tol, rtol=0)
    np.testing.assert_allclose(feat, ref_feat, atol=tol * max(1.0, float(np.abs(ref_feat).max())), rtol=0)
    assert ((prob > 0.5) == (ref_prob > 0.5)).mean() >= 0.99
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    again = model_grid_probabilities(model, images, batch_size=8)  # the plain pass reads the same graph
    np.testing.assert_array_equal(again, prob)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # no recompile
    # another batch size is not what the graph was built for: the eager network serves it
    np.testing.assert_allclose(model_grid_probabilities(model, images, batch_size=4), ref_prob, atol=1e-5, rtol=0)


def test_only_the_compiled_engine_compiles_and_only_a_network_worth_it() -> None:
    model = _model()
    assert compile_if_worth(model, "auto") is None and compiled_graph(model, 32) is None
    # the tiny test network is far below the threshold: a compile would not pay back
    assert segmenter_compile.gflop_per_slice(model) < segmenter_compile.COMPILE_MIN_GFLOP_PER_SLICE
    assert compile_if_worth(model, "compiled") is None and compiled_graph(model, 32) is None
    with pytest.raises(ValueError, match="segmenter engine must be one of"):
        compile_if_worth(model, "onnx")


def test_a_failed_compile_is_logged_and_leaves_the_eager_network(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    model = _model()

    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    assert compile_segmenter(model, batch_size=8) is None
    assert compiled_graph(model, 8) is None
    assert "torch.compile failed" in caplog.text and "no C++ compiler" in caplog.text
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    assert model_grid_probabilities(model, images, batch_size=8).shape == (5, 32, 32)


@pytest.mark.parametrize("engine, compiles", [("auto", False), ("compiled", True)])
def test_the_worker_compiles_a_loaded_segmenter_under_the_compiled_engine_only(
    engine: str, compiles: bool, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The wiring from GATEKEEPER_SEGMENTER_ENGINE to the compile at load (the compile itself: above)."""
    from app.core.config import get_settings
    from testkit.tiny_models import train_tiny_segmenter
    from workers.serving import model_cache

    calls: list[LiverSegmenter] = []
    monkeypatch.setattr(segmenter_compile, "COMPILE_MIN_GFLOP_PER_SLICE", 0.0)  # the tiny model counts as big
    monkeypatch.setattr(segmenter_compile, "compile_segmenter", lambda m, batch_size=32: calls.append(m) or 1.0)
    monkeypatch.setenv("GATEKEEPER_SEGMENTER_ENGINE", engine)
    get_settings.cache_clear()
    try:
        model, _ = model_cache._loader("segmenter")(train_tiny_segmenter(tmp_path / "seg"))
    finally:
        get_settings.cache_clear()
    assert calls == ([model] if compiles else [])

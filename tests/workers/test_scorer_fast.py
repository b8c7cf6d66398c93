"""The worker's fast scoring path against eager fp32, on the committed sample series (real CT, 20 slices).

Tolerances (stated in BENCHMARKS.md, "Scoring throughput"):
- fp32 paths (channels_last, torch.compile): slice and series scores within 1e-4 relative, heat-maps
  within 1e-4 of the largest heat value; only float summation order differs.
- bf16 autocast: scores within 5e-3 relative, heat-maps within 2e-2 in mean absolute difference
  relative to the mean heat value. Measured on random models at 64^2 and 128^2 (FAnoGAN and the
  autoencoder, 3 seeds): worst 1.4e-3 and 8e-3; bf16 keeps 8 mantissa bits (2^-8 = 4e-3 per value),
  and the means over 4,096-16,384 pixels average most of that out.
- ranking: every pair of slices whose fp32 scores differ by more than twice the tolerance keeps its
  order (closer pairs are ties at that precision; a random model's 20 sample slices lie 1e-5 apart).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from app.dicom.volume import SeriesVolume, load_series_volume
from models.scorer import ConvAutoencoder, FAnoGAN, ScorerConfig
from models.transforms import body_view
from workers.inference import engine as scorer_fast
from workers.inference.engine import FastScorer, Plan, choose_plan, fast_scorer
from workers.inference.scorer import VolumeScores, predict_slices, score_volume

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "totalseg-example" / "ct-dicom"
FP32_RTOL = 1e-4
BF16_RTOL, BF16_HEAT = 5e-3, 2e-2


@pytest.fixture(scope="module")
def volume() -> SeriesVolume:
    return load_series_volume(sorted(p for p in SAMPLE.iterdir() if p.is_file()))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _model(cls: type = FAnoGAN, size: int = 64) -> tuple[torch.nn.Module, dict]:
    config = ScorerConfig(image_size=size, base_width=8, latent_dim=32, embed_dim=8, n_fourier=4)
    data = {"preprocess": body_view(size).as_json(), "body_position": {}}
    meta = {"config": {"model": config.as_json(), "data": data}}
    return cls(config).eval(), meta


def _score(model: torch.nn.Module, meta: dict, volume: SeriesVolume, **kwargs: object) -> VolumeScores:
    g = volume.geometry
    return score_volume(model, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, meta, **kwargs)  # type: ignore[arg-type]


def _assert_parity(out: VolumeScores, ref: VolumeScores, rtol: float, heat_tol: float, heat_mean: bool) -> None:
    scale = np.abs(ref.slice_scores).max()
    np.testing.assert_allclose(out.slice_scores, ref.slice_scores, rtol=rtol, atol=rtol * scale)
    assert abs(out.series_score - ref.series_score) <= rtol * abs(ref.series_score)
    h, h_ref = out.heatmaps.astype(np.float32), ref.heatmaps.astype(np.float32)
    if heat_mean:
        assert np.abs(h - h_ref).mean() <= heat_tol * np.abs(h_ref).mean()
    else:  # float16 storage of the heat-maps adds up to 2^-11 relative
        assert np.all(np.abs(h - h_ref) <= heat_tol * np.abs(h_ref).max() + 1e-3 * np.abs(h_ref))
    a, b = ref.slice_scores[:, None] - ref.slice_scores[None], out.slice_scores[:, None] - out.slice_scores[None]
    apart = np.abs(a) > 2 * rtol * scale
    assert np.all(np.sign(a[apart]) == np.sign(b[apart])), "slices further apart than the tolerance changed order"


def test_plans() -> None:
    model, _ = _model()
    assert choose_plan(model, "fp32") == Plan("cpu", None, channels_last=False, compile=False)
    eager = choose_plan(model, "eager")
    assert not eager.compile and eager.channels_last
    assert eager.autocast == (torch.bfloat16 if scorer_fast.cpu_has_bf16() else None)
    assert not choose_plan(model, "auto").compile  # a tiny model never pays for a compile
    with pytest.raises(ValueError):
        choose_plan(model, "fast")


def test_fp32_setting_gives_the_reference_exactly(volume: SeriesVolume, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.config import get_settings

    monkeypatch.setenv("GATEKEEPER_SCORER_ENGINE", "fp32")
    get_settings.cache_clear()
    try:
        model, meta = _model()
        ref, out = _score(model, meta, volume), _score(model, meta, volume, fast=True)
        np.testing.assert_array_equal(out.slice_scores, ref.slice_scores)
        np.testing.assert_array_equal(out.heatmaps, ref.heatmaps)
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("cls", [FAnoGAN, ConvAutoencoder])
@pytest.mark.parametrize("size", [64, 128])
def test_eager_fast_path_parity(volume: SeriesVolume, cls: type, size: int) -> None:
    """What the worker runs while (or instead of) compiling: bf16 where the CPU has it, else fp32."""
    model, meta = _model(cls, size)
    ref, out = _score(model, meta, volume), _score(model, meta, volume, fast=True, engine="eager")
    if scorer_fast.cpu_has_bf16():
        _assert_parity(out, ref, BF16_RTOL, BF16_HEAT, heat_mean=True)
    else:
        _assert_parity(out, ref, FP32_RTOL, FP32_RTOL, heat_mean=False)


def test_fp32_channels_last_parity(volume: SeriesVolume, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan of a CPU without native bf16: fp32 channels_last, to fp32 tolerance."""
    monkeypatch.setattr(scorer_fast, "cpu_has_bf16", lambda: False)
    model, meta = _model()
    scorer = fast_scorer(model, "eager")
    assert scorer.plan.autocast is None
    _assert_parity(_score(model, meta, volume, fast=True, engine="eager"), _score(model, meta, volume),
                   FP32_RTOL, FP32_RTOL, heat_mean=False)  # fmt: skip


def test_model_is_left_untouched(volume: SeriesVolume) -> None:
    model, meta = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _score(model, meta, volume, fast=True, engine="eager")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.is_contiguous() for p in model.parameters())  # channels_last went to the copy only


def test_compile_failure_keeps_eager(volume: SeriesVolume, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", broken)
    model, meta = _model()
    scorer = FastScorer(model, Plan("cpu", None, channels_last=True, compile=True))
    assert not scorer.wait_compiled() and "no compiler" in (scorer.compile_error or "")
    x, pos = torch.rand(5, 3, 64, 64) * 2 - 1, torch.linspace(-1, 1, 5)
    torch.testing.assert_close(scorer.predict(x, pos).slice_scores, predict_slices(model, x, pos).slice_scores)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("g++") is None, reason="inductor needs a C++ compiler")
def test_compiled_fp32_parity_padding_and_no_recompile() -> None:
    """torch.compile (inductor) in fp32: 1e-4 parity, a last batch padded to the static shape."""
    model, _ = _model(ConvAutoencoder)  # the smaller graph: the compile takes less time
    scorer = FastScorer(model, Plan("cpu", None, channels_last=True, compile=True), batch_size=8)
    assert scorer.wait_compiled(), scorer.compile_error
    x, pos = torch.rand(19, 3, 64, 64) * 2 - 1, torch.linspace(-1, 1, 19)  # 8 + 8 + 3 (padded to 8)
    valid = torch.rand(19, 1, 64, 64) > 0.2
    ref, out = predict_slices(model, x, pos, valid), scorer.predict(x, pos, valid)
    torch.testing.assert_close(out.slice_scores, ref.slice_scores, rtol=FP32_RTOL, atol=0)
    torch.testing.assert_close(out.heatmaps, ref.heatmaps, rtol=0, atol=FP32_RTOL * float(ref.heatmaps.abs().max()))
    frames_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    scorer.predict(x, pos, valid)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames_before  # no recompile

"""The segmenter's bf16 fast path (native bf16 CPUs, CUDA) gives the fp32 mask, on the real sample study.

The shipped segmenter (``models/weights/segmenter.pt``, the production size) segments the committed sample
(Apache-2.0 TotalSegmentator CT, 20 slices) with bf16 autocast forced on and off (forced, so that the test
runs on a CPU without native bf16 too, where it is emulated: slow but the same arithmetic).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli.demo_models import SAMPLE_DIR, shipped
from app.dicom.volume import load_series_volume
from models.metrics import dice
from workers.inference import segmenter as segmenter_module
from workers.inference.segmenter import load_segmenter, segment_mask, segment_probabilities


@pytest.fixture(scope="module")
def trained() -> Path:
    return shipped("segmenter")


def test_bf16_masks_match_fp32(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = load_segmenter(trained)
    files = sorted(p for p in (SAMPLE_DIR / "totalseg-example" / "ct-dicom").iterdir() if p.is_file())
    volume = load_series_volume(files)
    args = (volume.hu, volume.geometry.pixel_spacing_mm, volume.geometry.slice_positions_mm)
    out = {}
    for bf16 in (False, True):
        monkeypatch.setattr(segmenter_module, "bf16_is_native", lambda _device, on=bf16: on)
        out[bf16] = segment_probabilities(model, *args), segment_mask(model, *args)
    (p32, m32), (p16, m16) = out[False], out[True]
    assert m32.sum() > 1000, "the shipped segmenter should find the sample's liver"
    assert float((p16 - p32).abs().max()) < 0.1
    assert float(dice(m16, m32)) > 0.99

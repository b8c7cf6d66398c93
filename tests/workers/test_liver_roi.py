"""Scoring inside the segmenter's liver: the region's geometry, the restricted score, its calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.dicom.volume import SeriesVolume, load_series_volume
from app.services.storage import file_sha256
from models.scorer import ConvAutoencoder, ScorerConfig
from models.transforms import erode, liver_view, mask_in_view, preprocess_series
from workers.inference.liver_roi import LiverRoi, fill_holes, roi_of
from workers.inference.scorer import load_scorer, score_volume
from workers.training.scorer_training import calibrate_checkpoint

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "totalseg-example" / "ct-dicom"


def test_fill_holes_and_erode() -> None:
    ring = np.zeros((1, 9, 9), dtype=bool)
    ring[0, 2:7, 2:7] = True
    ring[0, 4, 4] = False  # a lesion the segmenter left out
    assert fill_holes(ring)[0, 4, 4] and fill_holes(ring).sum() == 25
    square = torch.as_tensor(fill_holes(ring))[:, None]  # (1, 1, 9, 9)
    assert int(erode(square, 1).sum()) == 9 and int(erode(square, 2).sum()) == 1
    assert torch.equal(erode(square, 0), square)


def test_region_metadata() -> None:
    assert roi_of({}) is None
    roi = LiverRoi(2.0, "ab" * 32)
    assert roi_of({"roi": roi.as_json()}) == roi
    with pytest.raises(ValueError, match="unknown scoring region"):
        roi_of({"roi": {"kind": "spleen", "erosion_mm": 0}})


def test_mask_lands_where_the_view_shows_it() -> None:
    """A disc of brighter tissue inside a body: its mask, taken into the liver view (128 px at 1.5 mm,
    centre offset from the tissue centroid), covers the pixels where the preprocessed image is bright."""
    z, n, spacing = 6, 256, (0.8, 0.8)
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - 128) / 110) ** 2 + ((xx - 128) / 120) ** 2 < 1
    liver = (yy - 90) ** 2 + (xx - 70) ** 2 < 30**2  # inside the liver view's field
    hu = np.where(body, 0.0, -1000.0) + np.where(liver, 150.0, 0.0)
    hu = np.repeat(hu[None], z, axis=0).astype(np.float32)
    mask = np.repeat(liver[None], z, axis=0)
    config = liver_view()
    pre = preprocess_series(hu, spacing, np.arange(z) * 2.0, config)
    bright = pre.images[:, 1:2] > 0.3  # 150 HU -> 0.5 after the shift and window; 0 HU -> -0.25
    region = mask_in_view(mask, hu, spacing, config)
    assert region.shape == (z, 1, 128, 128) and int(region.sum()) > 0
    iou = float((region & bright).sum()) / float((region | bright).sum())
    assert iou > 0.9, iou
    eroded = mask_in_view(mask, hu, spacing, config, erosion_mm=3.0)
    assert bool((eroded <= region).all()) and int(eroded.sum()) < int(region.sum())
    only_two = mask_in_view(mask, hu, spacing, config, indices=[1, 4])
    assert torch.equal(only_two, region[[1, 4]])
    with pytest.raises(ValueError, match="not on the series grid"):
        mask_in_view(mask[:, :10], hu, spacing, config)


@pytest.fixture(scope="module")
def volume() -> SeriesVolume:
    return load_series_volume(sorted(p for p in SAMPLE.iterdir() if p.is_file()))


def test_restricted_score(volume: SeriesVolume) -> None:
    torch.manual_seed(0)
    config = ScorerConfig(image_size=128, base_width=4, latent_dim=8, conditional=False, top_k_fraction=0.01)
    model = ConvAutoencoder(config).eval()
    data = {"preprocess": liver_view().as_json(), "body_position": {}}
    plain = {"config": {"model": config.as_json(), "data": data}}
    inside = plain | {"roi": LiverRoi(0.0, "x").as_json()}
    g = volume.geometry
    args = (volume.hu, g.pixel_spacing_mm, g.slice_positions_mm)
    with pytest.raises(ValueError, match="needs the segmenter's mask"):
        score_volume(model, *args, inside)
    nothing = score_volume(model, *args, inside, liver=np.zeros(volume.hu.shape, dtype=np.uint8))
    assert not nothing.slice_scores.any() and nothing.series_score == 0.0  # no liver: nothing to judge
    assert nothing.region_pixels == 0  # the worker sends such a series to a radiologist (no_liver_found)
    everywhere = score_volume(model, *args, inside, liver=np.ones(volume.hu.shape, dtype=np.uint8))
    reference = score_volume(model, *args, plain)
    assert reference.region_pixels is None and everywhere.region_pixels  # whole view: no region counted
    np.testing.assert_allclose(everywhere.slice_scores, reference.slice_scores, rtol=1e-6)
    half = np.zeros(volume.hu.shape, dtype=np.uint8)
    half[:, :, : volume.hu.shape[2] // 2] = 1  # the patient's right: where the liver view looks
    some = score_volume(model, *args, inside, liver=half)
    assert (some.slice_scores <= reference.slice_scores + 1e-6).all()  # a top-k mean over fewer pixels
    assert not np.allclose(some.slice_scores, reference.slice_scores)


def test_calibration_inside_a_segmenters_liver(tmp_path: Path) -> None:
    from testkit.tiny_models import train_tiny_scorer, train_tiny_segmenter

    scorer = train_tiny_scorer(tmp_path / "scorer")
    segmenter_file = train_tiny_segmenter(tmp_path / "segmenter")
    ckpt = torch.load(segmenter_file, weights_only=False)
    ckpt["state"]["model"]["head.bias"].fill_(20.0)  # a segmenter that calls the whole body crop liver
    segmenter = tmp_path / "always-liver.pt"
    torch.save(ckpt, segmenter)

    out = calibrate_checkpoint(scorer, tmp_path / "in-liver.pt", device="cpu", segmenter=segmenter, erosion_mm=3.0)
    _, metadata = load_scorer(out)
    assert roi_of(metadata) == LiverRoi(3.0, file_sha256(segmenter))
    calibration = metadata["calibration"]
    assert calibration["heldout"]["n_slices"] >= 1 and np.isfinite(calibration["threshold"])
    assert file_sha256(segmenter) in (tmp_path / "in-liver.card.md").read_text()  # the card names the region
    again = calibrate_checkpoint(out, tmp_path / "whole.pt", device="cpu")  # without a segmenter: whole view
    assert roi_of(load_scorer(again)[1]) is None

    ckpt["state"]["model"]["head.bias"].fill_(-20.0)  # finds no liver anywhere
    torch.save(ckpt, segmenter)
    with pytest.raises(ValueError, match="no liver in any held-out slice"):
        calibrate_checkpoint(scorer, tmp_path / "none.pt", device="cpu", segmenter=segmenter)

"""Load a trained scorer and score a CT volume (batched); the checkpoint format is ``workers.inference.checkpoint``.

``score_volume`` runs the same preprocessing and body-position code as
training (``models.transforms``, ``models.body_position``) and returns one
score and one heat-map per DICOM slice, plus the series score (mean of the
top-k slice scores, ``models.scorer.aggregate_series``) and the calibrated
slice threshold when the checkpoint has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.body_position import BodyPosition, BodyPositionConfig, find_body_position
from models.scorer import ConvAutoencoder, FAnoGAN, ScorerConfig, ScorerPrediction, aggregate_series
from models.transforms import PreprocessConfig, preprocess_series, view_box, view_centre
from workers.inference.checkpoint import read_checkpoint
from workers.inference.liver_roi import roi_of, roi_valid
from workers.inference.patch_scorer import PATCH_KIND, patch_scorer_from, score_series


def load_scorer(checkpoint_path: Path, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, metadata: config, steps, data description, calibration if calibrated).

    A patch scorer (``metadata["kind"] == "patch-scorer"``) loads as its patch model
    (``workers.inference.patch_scorer``); older whole-view checkpoints as ``FAnoGAN`` / ``ConvAutoencoder``.
    """
    ckpt = read_checkpoint(checkpoint_path, device)
    metadata = ckpt["metadata"]
    if is_patch_scorer(metadata):
        return patch_scorer_from(ckpt, device)  # the file is read once
    config = ScorerConfig(**metadata["config"]["model"])
    detector = metadata["config"].get("detector", "fanogan")
    model = ConvAutoencoder(config) if detector == "autoencoder" else FAnoGAN(config)
    model.load_state_dict(ckpt["state"]["model"])
    return model.to(device).eval(), metadata


@torch.no_grad()
def predict_slices(
    model: torch.nn.Module,
    images: torch.Tensor,
    positions: torch.Tensor,
    valid: torch.Tensor | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    fast: bool = False,
    engine: str | None = None,
) -> ScorerPrediction:
    """Batched eval over (N, 3, S, S): eager fp32 on ``device`` (training and evaluation use this).

    ``fast``: the worker's path (``scorer_fast``: device, bf16, channels_last, torch.compile), with
    ``engine`` or else ``Settings.scorer_engine``; parity with eager fp32 in tests/workers/test_scorer_fast.py.
    """
    if fast:
        from workers.inference.engine import fast_scorer

        if engine is None:
            from app.core.config import get_settings

            engine = get_settings().scorer_engine
        if engine != "fp32":
            return fast_scorer(model, engine, batch_size).predict(images, positions, valid)
    was_training = model.training
    model.eval()
    scores, heats, recs = [], [], []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device).float()
        pos = positions[start : start + batch_size].to(device)
        v = None if valid is None else valid[start : start + batch_size].to(device)
        pred = model(x, pos, v)
        scores.append(pred.slice_scores.float().cpu())
        heats.append(pred.heatmaps.float().cpu())
        recs.append(pred.reconstructions.float().cpu())
    model.train(was_training)
    return ScorerPrediction(torch.cat(scores), torch.cat(heats), torch.cat(recs))


@dataclass
class VolumeScores:
    slice_scores: np.ndarray  # (Z,) in the order of the volume's Z axis (ascending along the normal)
    heatmaps: np.ndarray  # (Z, S, S) float16, in the preprocessed view (pixel_mm, centred on the body)
    positions: np.ndarray  # (Z,) normalised position from the lung base; NaN = unknown
    landmark: str  # how the position was found (models.body_position)
    series_score: float  # mean of the top-k slice scores
    threshold: float | None  # calibrated slice threshold, None when the checkpoint is uncalibrated
    flagged: np.ndarray  # (Z,) bool: slice score above the threshold (all False when uncalibrated)
    region_pixels: int | None = None  # view pixels a liver-restricted scorer looked at; None: whole view
    heatmap_box: tuple[float, float, float, float] | None = None  # the heat-maps' (y0, y1, x0, x1) on the slice


def is_patch_scorer(metadata: dict[str, Any]) -> bool:
    return metadata.get("kind") == PATCH_KIND


def score_volume_patches(
    model: Any,
    hu: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    slice_positions_mm: list[float] | np.ndarray,
    metadata: dict[str, Any],
    liver: np.ndarray | None,
    body: BodyPosition | None = None,
) -> VolumeScores:
    """A patch scorer over the segmenter's liver; no liver at all gives ``region_pixels == 0`` (a radiologist).
    ``body``: the series' ``find_body_position`` under the default configuration, if the caller has it."""
    if liver is None:
        raise ValueError("a patch scorer scores inside the liver: it needs the segmenter's mask of the series")
    if body is None:
        body = find_body_position(hu, pixel_spacing_mm, slice_positions_mm, BodyPositionConfig())
    calibration = metadata.get("calibration") or {}
    threshold = calibration.get("threshold")
    n = hu.shape[0]
    if not np.asarray(liver).any():
        empty = np.zeros(n, dtype=np.float32)
        return VolumeScores(empty, np.zeros((n, 1, 1), np.float16), body.normalised, body.landmark, 0.0, threshold,
                            np.zeros(n, dtype=bool), region_pixels=0)  # fmt: skip
    from workers.inference.engine import bf16_is_native

    device = next(iter([*model.parameters(), *model.buffers()])).device
    bf16 = bf16_is_native(device)  # the worker's fast path: bf16 where it is native
    out = score_series(model, metadata, hu, pixel_spacing_mm, slice_positions_mm, liver, body.normalised, bf16)
    scores = out.slice_scores.astype(np.float32)
    flagged = scores > threshold if threshold is not None else np.zeros(n, dtype=bool)
    box = out.grid.box  # the liver grid's window in series pixels
    return VolumeScores(scores, out.heatmaps.numpy().astype(np.float16), body.normalised, body.landmark,
                        out.series_score, threshold, flagged, region_pixels=int(out.region.sum()),
                        heatmap_box=(float(box.y0), float(box.y1), float(box.x0), float(box.x1)))  # fmt: skip


def configs_from_metadata(metadata: dict[str, Any]) -> tuple[PreprocessConfig, BodyPositionConfig]:
    data = metadata["config"]["data"]
    return PreprocessConfig.from_json(data["preprocess"]), BodyPositionConfig(**data["body_position"])


def score_volume(
    model: FAnoGAN | ConvAutoencoder,
    hu: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    slice_positions_mm: list[float] | np.ndarray,
    metadata: dict[str, Any],
    batch_size: int = 32,
    top_k: int = 3,
    fast: bool = False,
    engine: str | None = None,
    predictor: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], ScorerPrediction] | None = None,
    liver: np.ndarray | None = None,
    body: BodyPosition | None = None,
) -> VolumeScores:
    """Score every slice of one series (``SeriesVolume.hu`` and its geometry); ``fast``: see ``predict_slices``.

    A scorer calibrated inside the liver (``liver_roi``) needs ``liver``, the segmenter's (Z, Y, X) mask
    of this series: only the filled, eroded liver is scored. ``body``: the series' ``find_body_position`` under
    the default configuration, reused by a patch scorer (the others use their own configuration's).

    ``predictor`` (images, positions, valid) replaces ``predict_slices``: the benchmark runs other
    engines (a given ``FastScorer`` plan, ONNX Runtime) through this same code.
    """
    if is_patch_scorer(metadata):
        return score_volume_patches(model, hu, pixel_spacing_mm, slice_positions_mm, metadata, liver, body)
    preprocess, body_config = configs_from_metadata(metadata)
    position = find_body_position(hu, pixel_spacing_mm, slice_positions_mm, body_config)
    pre = preprocess_series(hu, pixel_spacing_mm, slice_positions_mm, preprocess)
    valid, region_pixels = pre.valid, None
    roi = roi_of(metadata)
    if roi is not None:
        if liver is None:
            raise ValueError("this scorer scores inside the liver: it needs the segmenter's mask of the series")
        valid = valid & roi_valid(roi, liver, hu, pixel_spacing_mm, preprocess)
        region_pixels = int(valid.sum())
    pos = torch.as_tensor(position.normalised, dtype=torch.float32)
    device = next(model.parameters()).device
    if predictor is not None:
        pred = predictor(pre.images, pos, valid)
    else:
        pred = predict_slices(model, pre.images, pos, valid, batch_size, device, fast, engine)
    threshold = metadata.get("calibration", {}).get("threshold")
    # where the view lies on the slice, so the case page can draw the heat-map over the CT
    box = view_box(hu.shape[1], hu.shape[2], pixel_spacing_mm, view_centre(torch.as_tensor(hu), pixel_spacing_mm,
                                                                           preprocess), preprocess)  # fmt: skip
    scores = pred.slice_scores.numpy()
    flagged = scores > threshold if threshold is not None else np.zeros(scores.shape, dtype=bool)
    return VolumeScores(
        slice_scores=scores,
        heatmaps=pred.heatmaps[:, 0].numpy().astype(np.float16),
        positions=position.normalised,
        landmark=position.landmark,
        series_score=float(aggregate_series(pred.slice_scores, top_k)),
        threshold=threshold,
        flagged=flagged,
        region_pixels=region_pixels,
        heatmap_box=box,
    )

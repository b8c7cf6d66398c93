"""Score a series with a patch scorer: sliding windows over the liver, heat-maps, slice and series scores.

The series is first put on the liver grid (``models.patch_gan.grid``) with the segmenter's liver mask;
windows of ``patch_size`` at ``stride`` whose centre cell touches the liver are scored in batches
(no autograd), their maps averaged into a heat-map per slice, and the slice score is the mean of the
``top_k`` highest heat values inside the liver eroded by ``erosion_mm``. The training-free deviation
rule (``detector="deviation"``) runs through the same code without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.patch_gan import PatchGANConfig, PatchScorer, build_patch_scorer
from models.patch_gan.grid import GridConfig, LiverGrid, liver_grid, patch_conditions
from models.patch_gan.model import DeviationRule
from models.patch_gan.score import (
    assemble,
    deviation_map,
    extract_patches,
    pad_for_patches,
    scoring_region,
    slice_scores,
    smooth,
    window_corners,
)
from workers.inference.checkpoint import read_checkpoint

PATCH_KIND = "patch-scorer"


@dataclass(frozen=True)
class ScoringConfig:
    stride: int = 16  # half a 32 px patch: every pixel is seen by up to 4 windows
    top_k: int = 64  # heat pixels (mm² at 1 mm) averaged into a slice score
    erosion_mm: float = 2.0
    series_top_k: int = 3  # slices averaged into the series score
    batch_size: int = 256
    # fusion with the training-free deviation rule: heat = network / network_scale + deviation / deviation_scale
    # (scales: median normal slice scores of each on the calibration patients); None: the network alone
    network_scale: float = 1.0
    deviation_scale: float | None = None
    # Gaussian smoothing of the network's heat-map (pixels): a squared residual is noisy pixel by pixel, a
    # lesion is not; the deviation rule smooths the same way (models.patch_gan.score.deviation_map)
    smooth_px: float = 0.0

    def as_json(self) -> dict[str, Any]:
        keys = ("stride", "top_k", "erosion_mm", "series_top_k", "batch_size", "network_scale", "deviation_scale",
                "smooth_px")  # fmt: skip
        return {k: getattr(self, k) for k in keys}


@dataclass
class PatchScores:
    slice_scores: np.ndarray  # (Z,) 0 where the slice has no liver
    heatmaps: torch.Tensor  # (Z, H, W) on the liver grid
    region: torch.Tensor  # (Z, H, W) bool: where slice scores were taken
    grid: LiverGrid
    series_score: float
    extra: dict[str, Any] = field(default_factory=dict)


def load_patch_scorer(path: Path, device: str | torch.device = "cpu") -> tuple[PatchScorer, dict[str, Any]]:
    """(model in eval mode with the EMA generator when the file has one, metadata)."""
    ckpt = read_checkpoint(path, device)
    if ckpt["metadata"].get("kind") != PATCH_KIND:
        raise ValueError(f"{path}: not a patch scorer checkpoint (kind {ckpt['metadata'].get('kind')!r})")
    return patch_scorer_from(ckpt, device)


def patch_scorer_from(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> tuple[PatchScorer, dict[str, Any]]:
    """The model of a checkpoint already read (``read_checkpoint``), in eval mode, and its metadata."""
    metadata = ckpt["metadata"]
    model = build_patch_scorer(PatchGANConfig.from_json(metadata["config"]["model"]))
    model.load_state_dict(ckpt["state"]["model"])
    return model.to(device).eval(), metadata


@torch.inference_mode()
def heat_of_grid(
    model: PatchScorer | None, grid: LiverGrid, scoring: ScoringConfig, patch_size: int = 32, bf16: bool = False
) -> torch.Tensor:
    """(Z, H, W) heat-map on the liver grid; ``model`` None or a ``DeviationRule``: the deviation rule.

    ``bf16``: the networks under bf16 autocast (the worker, where the CPU has native bf16 or on CUDA:
    ``workers.inference.engine.bf16_is_native``); the maps themselves are summed in fp32. Parity with
    fp32 in tests/models/test_patch_gan.py; training and evaluation use fp32.
    """
    if model is None or isinstance(model, DeviationRule):
        return deviation_map(grid.images, grid.liver)
    model.eval()
    corners = window_corners(grid.liver, patch_size, scoring.stride)
    shape = (grid.images.shape[0], grid.images.shape[2], grid.images.shape[3])
    if corners.shape[0] == 0:
        return torch.zeros(shape)
    maps, weights = [], []
    device = next(model.parameters()).device
    padded = pad_for_patches(grid.images, patch_size)
    for start in range(0, corners.shape[0], scoring.batch_size):
        c = corners[start : start + scoring.batch_size]
        x = extract_patches(padded, c, patch_size).to(device)
        centre = c[:, 1:] + patch_size // 2
        cond = patch_conditions(grid.conditions[c[:, 0]], centre, shape[1:]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            m, w = model.patch_maps(x, cond)
        maps.append(m.float().cpu())
        weights.append(w.float().cpu())
    heat = assemble(torch.cat(maps), torch.cat(weights), corners, shape)
    if scoring.smooth_px > 0:
        heat = smooth(heat, scoring.smooth_px)
    return heat


def fused_heat(
    model: PatchScorer | None, grid: LiverGrid, scoring: ScoringConfig, patch_size: int = 32, bf16: bool = False
) -> torch.Tensor:
    """The network's heat, fused with the deviation rule's when the scoring config says so."""
    heat = heat_of_grid(model, grid, scoring, patch_size, bf16)
    if model is None or isinstance(model, DeviationRule) or scoring.deviation_scale is None:
        return heat
    return heat / scoring.network_scale + deviation_map(grid.images, grid.liver) / scoring.deviation_scale


def score_grid(
    model: PatchScorer | None,
    grid: LiverGrid,
    scoring: ScoringConfig,
    patch_size: int = 32,
    pixel_mm: float = 1.0,
    bf16: bool = False,
) -> PatchScores:
    heat = fused_heat(model, grid, scoring, patch_size, bf16)
    region = scoring_region(grid.liver, int(round(scoring.erosion_mm / pixel_mm)))
    scores = slice_scores(heat, region, scoring.top_k)
    k = min(scoring.series_top_k, scores.numel())
    return PatchScores(scores.numpy(), heat, region, grid, float(scores.topk(k).values.mean()))


def score_series(
    model: PatchScorer | None,
    metadata: dict[str, Any] | None,
    hu: np.ndarray,
    spacing_mm: tuple[float, float],
    positions_mm: np.ndarray | list[float],
    liver: np.ndarray,
    body_position: np.ndarray,
    bf16: bool = False,
) -> PatchScores:
    """One series from HU with the segmenter's mask and the body position (``models.body_position``)."""
    grid_cfg = GridConfig(**metadata["config"]["grid"]) if metadata else GridConfig()
    scoring = ScoringConfig(**metadata["config"]["scoring"]) if metadata else ScoringConfig()
    patch = metadata["config"]["model"]["patch_size"] if metadata else 32
    rule_only = model is None or isinstance(model, DeviationRule)  # reads the centre plane only
    grid = liver_grid(hu, spacing_mm, positions_mm, liver, body_position, grid_cfg, centre_only=rule_only)
    return score_grid(model, grid, scoring, patch, grid_cfg.pixel_mm, bf16)

"""The PatchCore baseline of the patch-scorer evaluation: the segmenter's encoder, a memory of normal livers.

Issue #13, item 3: nearest-neighbour distance of the segmenter's encoder features to those of normal
training slices, no training of its own (``models.patchcore``). The frozen network is the shipped
segmenter (``models/weights/segmenter.pt``: trained on ``totalseg-s0009`` and ``totalseg-example`` only,
so it never saw a fold's held-out patient); the memory holds the features of every normal liver slice of
the fold's *other* patients, at the liver and one cell around it, thinned by a greedy coreset.

The segmenter sees its own input grid (2 mm, windowed, its context channels), not the scorers' 1 mm liver
grid, so the map is made there from HU and carried back: feature cells -> model grid -> series grid ->
liver grid, where it is scored like every other detector's map (``patch_eval``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from models.patch_gan.grid import GridBox as LiverBox
from models.patch_gan.grid import mask_to_grid
from models.patchcore import greedy_coreset, local_features, nearest_distance
from models.segmenter import GridBox, LiverSegmenter, from_model_grid, resample_to_box, to_model_grid
from models.transforms import intensity_shift
from workers.evaluation.cases import Case, Edit
from workers.training.patch_data import PreparedCase

log = logging.getLogger(__name__)


@dataclass
class PatchCoreMemory:
    segmenter: LiverSegmenter
    bank: torch.Tensor  # (N, D) normal feature vectors
    levels: tuple[int, ...] = (1, 2)
    fitted_on: dict = field(default_factory=dict)


def feature_maps(segmenter: LiverSegmenter, images: torch.Tensor, levels: tuple[int, ...],
                 batch_size: int = 16) -> torch.Tensor:  # fmt: skip
    """(N, C, S, S) model-grid images -> (N, D, h, w) fp32 PatchCore features (``models.patchcore``)."""
    segmenter.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            out.append(local_features(segmenter.unet, images[start : start + batch_size], levels))
    return torch.cat(out)


def liver_cells(liver: np.ndarray, box: GridBox, size: tuple[int, int]) -> torch.Tensor:
    """(N, Y, X) bool series-grid liver -> (N, h, w) fraction of each feature cell that is liver."""
    on_model = resample_to_box(torch.as_tensor(np.asarray(liver, dtype=np.float32)), box, fill=0.0)  # (N, S, S)
    return F.interpolate(on_model[:, None], size=size, mode="area")[:, 0]


def near_liver(cells: torch.Tensor, rings: int) -> torch.Tensor:
    """(N, h, w) liver fractions -> bool cells with liver within ``rings`` cells (a max filter)."""
    k = 2 * rings + 1
    return F.max_pool2d((cells > 0).float()[:, None], k, stride=1, padding=rings)[:, 0] > 0


def build_memory(segmenter: LiverSegmenter, cases: list[PreparedCase], levels: tuple[int, ...] = (1, 2),
                 coreset_fraction: float = 0.1, max_bank: int = 10_000, seed: int = 0) -> PatchCoreMemory:  # fmt: skip
    """Features of every normal liver slice of ``cases`` (cells with liver and one ring around), thinned."""
    vectors, described = [], {}
    for case in cases:
        idx = np.flatnonzero(case.normal)
        if idx.size == 0:
            continue
        images, box = to_model_grid(case.hu, case.spacing, case.positions_mm, segmenter.config)
        feats = feature_maps(segmenter, images[idx], levels)  # (n, D, h, w)
        cells = liver_cells(case.liver_mask[idx], box, (feats.shape[-2], feats.shape[-1]))  # (n, h, w)
        keep = near_liver(cells, rings=1)
        vectors.append(feats.permute(0, 2, 3, 1)[keep])  # (m, D)
        described[case.name] = {"slices": int(idx.size), "cells": int(keep.sum())}
    if not vectors:
        raise ValueError("no normal liver slice to build the PatchCore memory from")
    everything = torch.cat(vectors)
    n = min(max_bank, max(1, int(round(coreset_fraction * everything.shape[0]))))
    bank = everything[greedy_coreset(everything, n, seed)]
    log.info("PatchCore memory: %d of %d normal feature vectors (%s)", n, everything.shape[0], described)
    fitted = {"cases": described, "vectors": int(everything.shape[0]), "bank": n, "levels": list(levels)}
    return PatchCoreMemory(segmenter, bank, levels, fitted)


def _heat(memory: PatchCoreMemory, images: torch.Tensor, liver: np.ndarray, box: GridBox,
          liver_box: LiverBox) -> torch.Tensor:  # fmt: skip
    """(N, C, S, S) images of N slices with their (N, Y, X) liver -> (N, H, W) distance map on the liver grid.

    Distances are computed at cells within two rings of the liver (enough for the bilinear carry-back to
    fill the eroded liver the score reads) and are 0 elsewhere."""
    feats = feature_maps(memory.segmenter, images, memory.levels)  # (N, D, h, w)
    query = near_liver(liver_cells(liver, box, (feats.shape[-2], feats.shape[-1])), rings=2)  # (N, h, w)
    cells = torch.zeros(query.shape, dtype=torch.float32)
    if query.any():
        cells[query] = nearest_distance(feats.permute(0, 2, 3, 1)[query], memory.bank)
    model_grid = F.interpolate(cells[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return mask_to_grid(from_model_grid(model_grid, box).numpy(), liver_box)  # (N, H, W)


def series_heat(memory: PatchCoreMemory, case: Case, liver_box: LiverBox) -> tuple[torch.Tensor, GridBox, float]:
    """Every slice of a host series -> ((Z, H, W) map on its liver grid, the model-grid box, the HU shift);
    slices without liver get 0 (never scored)."""
    config = memory.segmenter.config
    shift = intensity_shift(torch.as_tensor(case.hu, dtype=torch.float32), config.preprocess)
    images, box = to_model_grid(case.hu, case.spacing, case.positions_mm, config, shift=shift)
    present = np.flatnonzero(case.liver.reshape(case.liver.shape[0], -1).any(1))
    out = torch.zeros((case.hu.shape[0], liver_box.height, liver_box.width))
    if present.size:
        out[present] = _heat(memory, images[present], case.liver[present], box, liver_box)
    return out, box, shift


def edits_heat(memory: PatchCoreMemory, case: Case, edits: list[Edit], liver_box: LiverBox, box: GridBox,
               shift: float) -> torch.Tensor:  # fmt: skip
    """The edited centre slice of each edit -> (len(edits), H, W) maps, mapped exactly as the host series was
    (its box and shift): the segmenter's neighbour channels read the edited slab where it reaches."""
    config = memory.segmenter.config
    reach = config.context * config.preprocess.neighbour_mm + float(np.max(np.abs(np.diff(case.positions_mm))))
    images = []
    for e in edits:
        near = [int(k) for k in np.flatnonzero(np.abs(case.positions_mm - case.positions_mm[e.index]) <= reach)]
        slab = e.slices(case)
        sub = np.stack([slab[k] if k in slab else case.hu[k] for k in near]).astype(np.float32)
        imgs, _ = to_model_grid(sub, case.spacing, case.positions_mm[near], config, box=box, shift=shift)
        images.append(imgs[near.index(e.index)])
    if not images:
        return torch.zeros((0, liver_box.height, liver_box.width))
    idx = [e.index for e in edits]
    return _heat(memory, torch.stack(images), case.liver[idx], box, liver_box)

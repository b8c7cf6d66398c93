"""Segment a series and say, per slice, how far the segmenter can be trusted there (the gate's second signal).

One plain pass and ``len(shifts)`` test-time-augmented passes (in-plane shifts on the segmenter's grid,
shifted back; optionally one intensity offset, the default until 2026-12-03) of the same network; the
signals are ``models.quality``'s. The mask is the largest 3D component of the passes' mean probability,
put back on the series grid: the one the worker writes as SEG. Averaging the passes that the signals need
anyway raised the held-out series Dice of all four leave-one-out folds (session 12: +0.001 to +0.013,
``reports/gate``); the signals still compare each pass with the plain one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.feature_density import FeatureDensity
from models.liver_ends import continuation_cm2
from models.quality import keep_liver, slice_signals
from models.segmenter import LiverSegmenter, mask_on_series_grid, to_model_grid
from workers.inference.segmenter import model_grid_probabilities, model_grid_probabilities_and_features

# 4 px at 2 mm = 8 mm: well inside the training augmentation (8 % of the field), not a multiple of the
# UNet's 16 px stride, so each pass sees a different sampling of the slice.
TTA_SHIFTS: tuple[tuple[int, int], ...] = ((4, 4), (-4, -4))
# No intensity pass since 2026-12-03: on the four leave-one-out folds, dropping the +20 HU pass left the failure
# AUROC at 0.832 (0.830 with it) and the failures among the 70 % lowest-risk slices at 19.9 % (22.7 %), and
# took a third of the quality pass's network time away (2.14 -> 1.36 s on ircadb-01; BENCHMARKS.md).
TTA_INTENSITY: float | None = None
# What a risk model fitted before the passes were recorded was fitted on: two shifts and +0.1 (windowed, +20 HU).
LEGACY_PASSES = {"shifts": TTA_SHIFTS, "intensity": 0.1}


def passes_record(shifts: tuple[tuple[int, int], ...] = TTA_SHIFTS, intensity: float | None = TTA_INTENSITY) -> dict:
    """The augmented passes as a risk model's ``fitted_on`` records them (JSON)."""
    return {"shifts": [list(s) for s in shifts], "intensity": intensity}


def passes_of(fitted_on: dict) -> dict:
    """``segment_with_quality``'s ``shifts`` and ``intensity`` for a risk model: the passes its signals and
    threshold were fitted with (a risk model is only valid for the signal it was calibrated on)."""
    record = fitted_on.get("quality_passes")
    if record is None:
        return dict(LEGACY_PASSES)
    return {"shifts": tuple((int(dy), int(dx)) for dy, dx in record["shifts"]), "intensity": record["intensity"]}


def density_of(segmenter_metadata: dict) -> FeatureDensity | None:
    """The segmenter checkpoint's feature density (``workers.training.feature_density``), if it has one."""
    fitted = segmenter_metadata.get("feature_density")
    return FeatureDensity.from_json(fitted) if fitted else None


def rolled_channels_last(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``torch.roll(images, (dy, dx), dims=(2, 3))`` written once into a channels_last tensor.

    (Z, C, S, S) -> (Z, C, S, S). torch.roll over two dims copies twice, and the network's channels_last copy
    of every batch a third time; four block copies into the layout the network runs in make one pass."""
    out = torch.empty_like(images, memory_format=torch.channels_last)
    h, w = images.shape[2], images.shape[3]
    dy, dx = dy % h, dx % w
    for src_y, dst_y in ((slice(0, h - dy), slice(dy, h)), (slice(h - dy, h), slice(0, dy))):
        for src_x, dst_x in ((slice(0, w - dx), slice(dx, w)), (slice(w - dx, w), slice(0, dx))):
            out[:, :, dst_y, dst_x] = images[:, :, src_y, src_x]
    return out


@dataclass
class SegmentationQuality:
    mask: np.ndarray  # (Z, Y, X) uint8 on the series grid: the largest 3D component
    signals: dict[str, np.ndarray]  # name -> (Z,) per slice (models.quality.SIGNALS)
    seconds: float


def segment_with_quality(
    model: LiverSegmenter,
    hu: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    slice_positions_mm: list[float] | np.ndarray,
    *,
    shifts: tuple[tuple[int, int], ...] = TTA_SHIFTS,
    intensity: float | None = TTA_INTENSITY,
    batch_size: int = 32,
    density: FeatureDensity | None = None,
    ensemble_mask: bool = True,
    others: Sequence[LiverSegmenter] = (),
) -> SegmentationQuality:
    """(Z, Y, X) HU -> the liver mask on the series grid and the quality signals per slice; with the
    segmenter's ``density`` (its checkpoint's ``feature_density``) also ``feature_distance``.
    ``ensemble_mask``: the mask from the mean probability of all passes (False: the plain pass alone).
    ``others``: more members of an ensemble (trained alike, another seed), each one plain pass that joins the
    augmented ones: in the mean, and in the disagreement with the plain pass (on the same input grid)."""
    for other in others:
        if other.config.preprocess != model.config.preprocess or other.config.context != model.config.context:
            raise ValueError("an ensemble member must read the same input grid as the segmenter")
    t0 = time.perf_counter()
    images, box = to_model_grid(hu, pixel_spacing_mm, slice_positions_mm, model.config)  # (Z, C, S, S)
    # once, in the layout the network runs in: each batch of each pass is then a view, not a copy
    images = images.contiguous(memory_format=torch.channels_last)
    if density is None:
        base, feats = model_grid_probabilities(model, images, batch_size=batch_size), None  # (Z, S, S)
    else:
        base, feats = model_grid_probabilities_and_features(model, images, batch_size=batch_size)
    threshold = model.config.threshold
    # the augmented passes only where the plain pass found liver (and 2 slices beyond its ends): elsewhere
    # they could only add islands that the largest-component rule drops; a 300-slice series has ~1/3 liver
    found = np.flatnonzero((base > threshold).reshape(len(base), -1).any(1))
    lo, hi = (max(0, found[0] - 2), min(len(base), found[-1] + 3)) if found.size else (0, 0)
    window = images[lo:hi]

    def member(images_of_window: torch.Tensor, net: LiverSegmenter = model) -> np.ndarray:
        """One augmented pass over the window, as (Z, S, S) on the whole series (0 outside the window)."""
        full = np.zeros_like(base)
        full[lo:hi] = model_grid_probabilities(net, images_of_window, batch_size=batch_size)
        return full

    members = [member(window, other) for other in others]
    for dy, dx in shifts:
        moved = rolled_channels_last(window, dy, dx)  # the border is air: wrapping brings in air
        members.append(np.roll(member(moved), shift=(-dy, -dx), axis=(1, 2)))
    if intensity is not None:
        members.append(member((window + intensity).clamp(-1.0, 1.0)))
    prob = base
    if ensemble_mask and members:  # the mean, summed in place: no (passes, Z, S, S) stack on a 300-slice series
        prob = base.copy()
        for m in members:
            prob += m
        prob /= len(members) + 1
    kept = torch.from_numpy(keep_liver(prob, threshold))
    mask = mask_on_series_grid(kept, box, threshold).numpy()
    positions = np.asarray(slice_positions_mm, dtype=np.float64)
    centre = images[:, images.shape[1] // 2].numpy()  # (Z, S, S) the slices themselves, windowed
    signals = slice_signals(base, members, model.config.preprocess.pixel_mm, positions, threshold, image=centre)
    if density is not None and feats is not None:
        signals["feature_distance"] = density.distance(feats)
    # past the written mask's ends, where every pass agrees on nothing (models.liver_ends)
    signals["continuation_cm2"] = continuation_cm2(hu, mask, pixel_spacing_mm, positions)
    return SegmentationQuality(mask, signals, time.perf_counter() - t0)

"""Inputs the gate cannot judge: checks on the volume (before any model) and on the segmenter's liver (right
after segmentation, before any score). Each check returns None or an ``InputDoubt``: a reason (a
``DecisionReason`` value) and a detail a radiologist can act on.

Every threshold below was measured on the real CT in ``../shared/data`` (the margins are in the comments and in
``tests/models/test_input_checks_real.py``); none is fitted, each is a wide bound on anatomy or on the HU scale.

- ``hu_doubt``: CT in Hounsfield units has air (-1000), fat (-150..-50) and soft tissue (0..100) populations,
  the last two as peaks over the sparse -450..-250 HU range between lung and fat. A windowed 0-255 image, a
  0-2000 copy, MR or a constant image lacks at least one of them.
- ``Coverage``: where the series lies against the lung base (``models.body_position``). Its first slice with
  lung is a bowel-gas run in ircadb-07 (30 cm^2 of colon gas on 50 slices, 140 mm below the real base): here the
  base is the caudal end of the run of lung slices that holds the largest lung cross-section, and only a run that
  reaches ``MIN_LUNG_PEAK_CM2`` counts as lung. Without lung (abdomen or pelvis only) the position is unknown:
  a pelvis-only series cannot be told from an upper-abdomen slab by the body position.
- ``liver_doubts``: the segmenter's liver where the coverage holds none (the chest series whose "liver" was found on
  all 141 slices), too little liver where the coverage holds it, and a liver cut by the field of view.
- ``contrast_note``: the liver's median HU against the training range, as evidence (never a refusal).

Cost, measured on a 302-slice 512 x 512 series on this 2-core machine: the HU check 30 ms (a strided sample of
2 M voxels), the coverage and the liver checks 0.7-0.9 s, nearly all of it ``find_body_position``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.body_position import BodyPosition, BodyPositionConfig, find_body_position


@dataclass(frozen=True)
class InputDoubt:
    reason: str  # a DecisionReason value (app.db.states)
    detail: str  # in words, for the radiologist; no PHI


# --- not CT in HU -------------------------------------------------------------------------------------------
# air below -900 HU counts the padding outside the reconstruction circle (-1024 to -3024) too: a tight field of view
# may show no air, but CT in HU never has nothing below -900
AIR_HU, FAT_HU, SOFT_HU, VALLEY_HU = (-np.inf, -900.0), (-150.0, -50.0), (0.0, 100.0), (-450.0, -250.0)
# Measured over the 11 real CT volumes (abdomen, chest, crops; 2026-12-02): air 8.8-60.7 % of voxels (the
# 178 mm wide crop totalseg-s0009 has least), fat 10.2-39.0 % and soft tissue 17.9-45.0 % of tissue voxels
# (>= -900 HU), each peak 9.2-68.5 (fat) and 15.7-57.6 (soft tissue) times as dense per HU as the valley.
MIN_AIR_FRACTION = 0.01
MIN_FAT_FRACTION = 0.03
MIN_SOFT_FRACTION = 0.05
MIN_PEAK_RATIO = 3.0
HISTOGRAM_VOXELS = 2_000_000  # a strided sample of about this many voxels (the fractions move < 0.5 %)


def _sample(hu: np.ndarray) -> np.ndarray:
    z, rows, cols = hu.shape
    step = max(1, int(math.sqrt(rows * cols / 16384)))  # about 128 x 128 per slice
    per_slice = math.ceil(rows / step) * math.ceil(cols / step)
    z_step = max(1, math.ceil(z * per_slice / HISTOGRAM_VOXELS))
    return np.ascontiguousarray(hu[::z_step, ::step, ::step])


def hu_fractions(hu: np.ndarray) -> dict[str, float]:
    """Air share of all voxels; fat, soft tissue and valley shares of the tissue voxels (>= -900 HU); peak ratios."""
    s = _sample(np.asarray(hu))

    def count(lo: float, hi: float) -> int:
        return int(np.count_nonzero((s >= lo) & (s < hi)))

    tissue = max(int(np.count_nonzero(s >= AIR_HU[1])), 1)
    fat, soft, valley = count(*FAT_HU), count(*SOFT_HU), count(*VALLEY_HU)
    valley_per_100 = max(valley / 2.0, 1.0)  # the valley is 200 HU wide, fat and soft tissue 100
    return {"air": count(*AIR_HU) / s.size, "fat": fat / tissue, "soft": soft / tissue, "valley": valley / tissue,
            "fat_peak": fat / valley_per_100, "soft_peak": soft / valley_per_100,
            "min": float(s.min()), "max": float(s.max())}  # fmt: skip


def hu_doubt(hu: np.ndarray) -> InputDoubt | None:
    """``not_ct_hu`` when the voxel histogram lacks air, fat or soft tissue where CT in HU has them."""
    f = hu_fractions(hu)
    missing = []
    if f["air"] < MIN_AIR_FRACTION:
        missing.append(f"air (below {AIR_HU[1]:.0f} HU) in {100 * f['air']:.1f} % of voxels "
                       f"(CT: at least {100 * MIN_AIR_FRACTION:.0f} %)")  # fmt: skip
    if f["fat"] < MIN_FAT_FRACTION or f["fat_peak"] < MIN_PEAK_RATIO:
        missing.append(f"fat ({FAT_HU[0]:.0f}..{FAT_HU[1]:.0f} HU) in {100 * f['fat']:.1f} % of tissue voxels "
                       f"(CT: at least {100 * MIN_FAT_FRACTION:.0f} %, as a peak)")  # fmt: skip
    if f["soft"] < MIN_SOFT_FRACTION or f["soft_peak"] < MIN_PEAK_RATIO:
        missing.append(f"soft tissue ({SOFT_HU[0]:.0f}..{SOFT_HU[1]:.0f} HU) in {100 * f['soft']:.1f} % of tissue "
                       f"voxels (CT: at least {100 * MIN_SOFT_FRACTION:.0f} %, as a peak)")  # fmt: skip
    if not missing:
        return None
    return InputDoubt("not_ct_hu", f"not CT in Hounsfield units: values {f['min']:.0f}..{f['max']:.0f} after "
                      f"rescale; no {'; no '.join(missing)}. A windowed or rescaled export, or not CT: send the "
                      "original CT series (RescaleSlope/RescaleIntercept to HU)")  # fmt: skip


# --- coverage (body position) --------------------------------------------------------------------------------
# ircadb-07's colon gas peaks at 35 cm^2; the lungs of the chest series pass 150 cm^2 within 50 mm of their base.
# A series that ends within about 20 mm above its base (totalseg-example 3 mm: 52 cm^2) gets an unknown position.
MIN_LUNG_PEAK_CM2 = 60.0
# Measured from this base (reference masks): the liver top lies 38, 62 and 88 mm above it (ircadb-01, -17, -07),
# the liver's lowest slice 67-117 mm below it.
LIVER_MAX_ABOVE_BASE_MM = 120.0
LIVER_MAX_BELOW_BASE_MM = 250.0


@dataclass(frozen=True)
class Coverage:
    """The series against the lung base: ``position_mm`` signed mm from it (cranial positive), NaN if unknown."""

    base_index: int | None  # the lung base's slice; None: no lung found
    base_inside: bool  # the base lies inside the series (False: at or below its first slice, a lower bound)
    position_mm: np.ndarray  # (Z,)

    @property
    def known(self) -> bool:
        return self.base_index is not None


def coverage_of(
    hu: np.ndarray, pixel_spacing_mm: tuple[float, float], positions_mm: Sequence[float],
    config: BodyPositionConfig | None = None, body: BodyPosition | None = None,
) -> Coverage:  # fmt: skip
    """The robust lung base (see the module docstring) and every slice's position from it.

    ``body``: this series' ``find_body_position`` under ``config``, when the caller has it already (the worker
    computes it once for the checks and the patch scorer; it is most of this function's cost)."""
    config = config or BodyPositionConfig()
    positions = np.asarray(positions_mm, dtype=np.float64)
    body = body if body is not None else find_body_position(hu, pixel_spacing_mm, positions, config)
    area = body.lung_area_cm2
    runs, n = ndimage.label(area >= config.base_area_cm2)
    peak = int(np.argmax(area)) if area.size else 0
    if n == 0 or runs[peak] == 0 or area[peak] < MIN_LUNG_PEAK_CM2:
        return Coverage(None, False, np.full(positions.shape, np.nan))
    base = int(np.flatnonzero(runs == runs[peak])[0])
    return Coverage(base, base > 0, positions - positions[base])


# --- the segmenter's liver ----------------------------------------------------------------------------------
MIN_SLICE_LIVER_CM2 = 5.0  # a cross-section that counts (the liver's caudal tip is often smaller)
MIN_OUTSIDE_CM3 = 10.0  # liver found where none can be: refused from this much on
BASE_BAND_MM = (-20.0, 20.0)  # around the lung base the liver is large: 84-195 cm^2 per slice (mean, 3 patients)
MIN_BAND_MEAN_CM2 = 20.0
WHOLE_LIVER_SPAN_MM = (-150.0, 120.0)  # a coverage from 150 mm below to 120 mm above the base holds the whole liver
MIN_WHOLE_LIVER_CM3 = 400.0  # adult livers measured here: 1126-1861 cm^3
CUT_END_CM2 = 5.0  # liver cross-section on the first or last slice: the series ends inside the liver
CUT_EDGE_MM = 10.0  # contact with the image edge or the padding (reconstruction circle) on one slice
CUT_EDGE_SLICES = 3
PADDING_HU = -1100.0  # below air: outside the reconstruction circle


def _runs(indices: np.ndarray) -> str:
    """[3, 4, 5, 9] -> '3-5, 9' (slice indices, for a detail)."""
    out, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            out.append(f"{start}-{i}" if i != start else f"{i}")
            start = None
    return ", ".join(out[:6]) + (" ..." if len(out) > 6 else "")


def _outside_doubt(area: np.ndarray, slab_mm: float, cov: Coverage) -> InputDoubt | None:
    if not cov.known:
        return None
    pos = cov.position_mm
    above, below = pos > LIVER_MAX_ABOVE_BASE_MM, pos < -LIVER_MAX_BELOW_BASE_MM
    outside = (above | below) & (area >= MIN_SLICE_LIVER_CM2)
    volume_cm3 = float(area[outside].sum() * slab_mm / 10.0)
    if volume_cm3 < MIN_OUTSIDE_CM3:
        return None
    where = f"{LIVER_MAX_ABOVE_BASE_MM:.0f} mm or more above" if above[outside].any() else \
        f"{LIVER_MAX_BELOW_BASE_MM:.0f} mm or more below"  # fmt: skip
    bound = "" if cov.base_inside else " (the lung base lies at or below the first slice: a lower bound)"
    whole = " The whole coverage lies where no liver is expected." if (above | below).all() else ""
    share = 100.0 * volume_cm3 / max(float(area.sum() * slab_mm / 10.0), 1e-6)
    return InputDoubt("no_liver_expected", f"liver found on slices {_runs(np.flatnonzero(outside))} "
                      f"({volume_cm3:.0f} cm3, {share:.0f} % of the liver found), {where} the lung base{bound}, "
                      f"where no liver reaches.{whole} A chest or pelvis series, or a segmenter that misreads "
                      "this anatomy: contour by hand")  # fmt: skip


def _too_little_doubt(area: np.ndarray, slab_mm: float, cov: Coverage) -> InputDoubt | None:
    if not cov.base_inside:
        return None
    pos = cov.position_mm
    lo, hi = BASE_BAND_MM
    band = (pos >= lo) & (pos <= hi)
    if band.any() and pos.min() <= lo and pos.max() >= hi:
        mean = float(area[band].mean())
        if mean < MIN_BAND_MEAN_CM2:
            return InputDoubt("too_little_liver", f"slices {_runs(np.flatnonzero(band))} lie within {hi:.0f} mm of "
                              f"the lung base, where the liver fills 84-195 cm2 per slice in the measured patients; "
                              f"the segmenter found {mean:.1f} cm2 per slice there (a resected or displaced liver, "
                              "or a segmenter failure)")  # fmt: skip
    volume_cm3 = float(area.sum() * slab_mm / 10.0)
    if pos.min() <= WHOLE_LIVER_SPAN_MM[0] and pos.max() >= WHOLE_LIVER_SPAN_MM[1] and volume_cm3 < MIN_WHOLE_LIVER_CM3:
        return InputDoubt("too_little_liver", f"the coverage ({pos.min():.0f} to {pos.max():.0f} mm from the lung "
                          f"base) holds the whole liver, but the segmenter found {volume_cm3:.0f} cm3 (adult livers: "
                          f"over {MIN_WHOLE_LIVER_CM3:.0f} cm3)")  # fmt: skip
    return None


_EDGES = ("first row", "last row", "first column", "last column")


def _edge_contacts(liver: np.ndarray, hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Z, 4) liver pixels on each image edge, (Z,) liver pixels next to the padding."""
    edges = np.stack([liver[:, 0, :].sum(1), liver[:, -1, :].sum(1), liver[:, :, 0].sum(1), liver[:, :, -1].sum(1)], 1)
    padding = np.zeros(liver.shape[0], dtype=np.int64)
    slices = np.flatnonzero(liver.any(axis=(1, 2)))
    for k in slices:
        pad = hu[k] < PADDING_HU
        if pad.any():
            padding[k] = int(np.count_nonzero(ndimage.binary_dilation(pad) & liver[k]))
    return edges, padding


def _cut_doubt(liver: np.ndarray, area: np.ndarray, hu: np.ndarray, pixel_mm: float) -> InputDoubt | None:
    parts = []
    if area[-1] >= CUT_END_CM2:
        parts.append(f"the liver continues past the most cranial slice (index {len(area) - 1}: {area[-1]:.0f} cm2)")
    if area[0] >= CUT_END_CM2:
        parts.append(f"the liver continues past the most caudal slice (index 0: {area[0]:.0f} cm2)")
    edges, padding = _edge_contacts(liver, hu)
    min_px = CUT_EDGE_MM / pixel_mm
    for j, name in enumerate(_EDGES):
        hit = np.flatnonzero(edges[:, j] >= min_px)
        if len(hit) >= CUT_EDGE_SLICES:
            parts.append(f"the liver touches the image's {name} on {len(hit)} slices ({_runs(hit)})")
    hit = np.flatnonzero(padding >= min_px)
    if len(hit) >= CUT_EDGE_SLICES:
        parts.append(f"the liver touches the edge of the reconstructed field of view on {len(hit)} slices "
                     f"({_runs(hit)})")  # fmt: skip
    if not parts:
        return None
    return InputDoubt("liver_cut_by_fov", "the field of view cuts through the liver: " + "; ".join(parts))


def liver_doubts(
    liver: np.ndarray, hu: np.ndarray, pixel_spacing_mm: tuple[float, float], slab_mm: float, cov: Coverage
) -> list[InputDoubt]:  # fmt: skip
    """Every doubt about the segmenter's liver (Z, Y, X bool), most telling first: outside the coverage's liver
    range, too little for the coverage, cut by the field of view."""
    liver = np.asarray(liver, dtype=bool)
    area = liver.sum(axis=(1, 2)) * (pixel_spacing_mm[0] * pixel_spacing_mm[1] / 100.0)  # (Z,) cm^2
    if not liver.any():
        return []  # nothing found: NO_LIVER_FOUND, decided by the route
    found = [_outside_doubt(area, slab_mm, cov), _too_little_doubt(area, slab_mm, cov),
             _cut_doubt(liver, area, hu, min(pixel_spacing_mm))]  # fmt: skip
    return [d for d in found if d is not None]


# [low, high] liver median HU of a segmenter's training cases, in its checkpoint's metadata when its training
# recorded it (workers.training.segmenter_data.training_liver_hu)
TRAINING_LIVER_HU_KEY = "training_liver_median_hu"


def contrast_note(hu: np.ndarray, liver: np.ndarray, training_hu: Sequence[float] | None) -> str | None:
    """The liver's median HU against the training range (evidence: a contrast phase unlike training)."""
    liver = np.asarray(liver, dtype=bool)
    if not liver.any():
        return None
    median = float(np.median(np.asarray(hu)[liver]))
    if not training_hu:
        return f"liver median {median:.0f} HU (no training range recorded)"
    lo, hi = float(training_hu[0]), float(training_hu[1])
    verdict = "within" if lo <= median <= hi else "outside"
    return f"liver median {median:.0f} HU, {verdict} the training range {lo:.0f}..{hi:.0f} HU"

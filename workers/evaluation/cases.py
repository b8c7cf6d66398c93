"""Shared pieces of the real-CT evaluations: cases, the split, model views and position-matched lesion edits.

Used by ``scorer_eval`` (the scorer's tests) and ``gate_eval`` (scorer and segmenter together):

- ``EvalConfig``: the MANIFEST split and the lesion-transplant parameters;
- ``Case`` / ``load_case``: a series with its liver and tumour masks and its body position;
- ``SeriesView``: one series through a scorer ``PreprocessConfig``, modified slices on demand;
- ``Edit`` / ``make_lesion_edits``: real tumours cut along their masks and transplanted into another
  patient's normal liver at the same distance from the lung base (``models.anomalies``), on a slab
  of 5 slices so that the models' neighbour channels see the lesion consistently;
- ``auroc`` and ``indices_of``: small helpers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from models.anomalies import (
    cut_lesion,
    diameter_bin,
    disc_warp,
    equivalent_diameter_mm,
    gaussian_blob,
    metal_disc,
    rescale_lesion,
    support,
    transplant_lesion,
    valid_placements,
)
from models.body_position import BodyPosition, find_body_position
from models.transforms import (
    AIR_HU,
    PreprocessConfig,
    intensity_shift,
    interpolate_along_z,
    padding_mask,
    preprocess_series,
    resample_inplane,
    tissue_centroid,
    window,
)
from workers.training.scorer_data import load_case_volume, load_nifti_volume

log = logging.getLogger(__name__)
SLAB = 2  # slices modified on each side of the centre: covers the +-3 mm neighbour channels at 1.6 mm


@dataclass(frozen=True)
class EvalConfig:
    """What is evaluated; defaults follow the data MANIFEST split."""

    donor: str = "ircadb-01"  # patient the models never saw
    recipient: str = "ircadb-17"
    recipient_normal: tuple[int, int] = (1, 75)  # normal liver, 2 slices from its tumour run (78-113)
    heldout_normal: tuple[tuple[int, int], ...] = ((0, 45), (126, 128))  # of the donor
    donor_tumour: tuple[int, int] = (48, 123)
    donor_normal_liver: tuple[int, int] = (27, 45)  # held-out slices with liver
    recipient_tumour: tuple[int, int] = (78, 113)
    position_tolerance_mm: float = 8.0
    feather_mm: float = 3.0
    min_lesion_diameter_mm: float = 3.0
    diameter_edges_mm: tuple[float, ...] = (10.0, 15.0)
    blob_sigma_mm: float = 5.0
    blob_amplitude_hu: float = 100.0
    warp_radius_mm: float = 20.0
    warp_shift_mm: float = 5.0
    metal_radius_mm: float = 4.0
    synthetic_per_slice: int = 4
    target_fpr: float = 0.05
    seed: int = 0


@dataclass
class Case:
    name: str
    hu: np.ndarray  # (Z, Y, X)
    spacing: tuple[float, float]
    positions_mm: np.ndarray  # (Z,)
    body: BodyPosition
    liver: np.ndarray  # (Z, Y, X) bool, tumours included
    tumour: np.ndarray  # (Z, Y, X) bool
    liver_only: np.ndarray  # (Z, Y, X) bool, liver without tumours or cysts


def load_case(data_dir: Path, name: str) -> Case:
    root = data_dir / "ct" / name
    volume = load_case_volume(root / "ct-dicom")
    masks = {k: load_nifti_volume(root / "masks" / f"{k}.nii.gz").hu for k in ("liver", "tumor", "labels")}
    for k, m in masks.items():
        if m.shape != volume.hu.shape:
            raise ValueError(f"{name}: mask {k} {m.shape} is not on the CT grid {volume.hu.shape}")
    body = find_body_position(volume.hu, volume.pixel_spacing_mm, volume.positions_mm)
    liver = masks["liver"] > 0.5
    return Case(
        name,
        volume.hu,
        volume.pixel_spacing_mm,
        volume.positions_mm,
        body,
        liver,
        masks["tumor"] > 0.5,
        np.rint(masks["labels"]) == 1,
    )


class SeriesView:
    """One series through one PreprocessConfig: cached view planes, modified slices on demand."""

    def __init__(self, case: Case, config: PreprocessConfig, chunk: int = 32) -> None:
        self.case, self.config = case, config
        hu = torch.as_tensor(case.hu, dtype=torch.float32)
        self.shift = intensity_shift(hu, config)
        cy, cx = tissue_centroid(hu, case.spacing)
        self.centre = (cy + config.centre_offset_mm[0], cx + config.centre_offset_mm[1])
        self.positions = torch.as_tensor(case.positions_mm, dtype=torch.float64)
        planes, outside = zip(*(self._resample(hu[s : s + chunk]) for s in range(0, hu.shape[0], chunk)), strict=True)
        self.planes, self.outside = torch.cat(planes), torch.cat(outside)  # (Z, S, S) HU, fraction outside

    def _resample(self, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = padding_mask(block, self.config.padding_threshold_hu)
        block = torch.where(pad, torch.full_like(block, AIR_HU), block + self.shift)
        return (
            resample_inplane(block, self.case.spacing, self.centre, self.config, fill=AIR_HU),
            resample_inplane(pad.float(), self.case.spacing, self.centre, self.config, fill=1.0),
        )

    def images(
        self, indices: list[int], replaced: dict[int, np.ndarray] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, S, S) images and (N, 1, S, S) valid for centre slices ``indices``; ``replaced``
        maps slice index -> modified HU slice (Y, X)."""
        planes, outside = self.planes, self.outside
        if replaced:
            planes, outside = planes.clone(), outside.clone()
            keys = sorted(replaced)
            p, o = self._resample(torch.as_tensor(np.stack([replaced[k] for k in keys]), dtype=torch.float32))
            planes[keys], outside[keys] = p, o
        centres = self.positions[torch.as_tensor(indices, dtype=torch.long)]
        offsets = torch.tensor([-self.config.neighbour_mm, 0.0, self.config.neighbour_mm], dtype=torch.float64)
        query = (centres[:, None] + offsets[None]).reshape(-1)
        size = self.config.size
        stack = interpolate_along_z(planes, self.positions, query).reshape(len(indices), 3, size, size)
        valid = (interpolate_along_z(outside, self.positions, centres) < 0.5)[:, None]
        images = torch.where(valid, window(stack, self.config.level, self.config.width), torch.full_like(stack, -1.0))
        return images.float(), valid

    def mask_fraction(self, mask: np.ndarray) -> np.ndarray:
        """(Z, Y, X) bool mask -> (Z, S, S) fraction covered, on the model's view grid."""
        t = torch.as_tensor(mask, dtype=torch.float32)
        return resample_inplane(t, self.case.spacing, self.centre, self.config, fill=0.0).numpy()

    def check_parity(self, indices: list[int]) -> float:
        """Max |difference| to ``preprocess_series`` on unmodified slices (must be ~0)."""
        ref = preprocess_series(self.case.hu, self.case.spacing, self.case.positions_mm, self.config, indices)
        mine, valid = self.images(indices)
        if not torch.equal(valid, ref.valid):
            raise AssertionError("SeriesView disagrees with preprocess_series on the valid mask")
        return float((mine - ref.images).abs().max())


# ---------------------------------------------------------------- anomalies (model-independent HU edits)


@dataclass
class Edit:
    """One modified slab: what was done, where, and the modified HU inside a window (memory-light)."""

    test: str  # "lesion", "lesion-unmatched", "blob", "warp", "metal"
    case: str  # host series
    index: int  # centre slice in the host series
    window: tuple[int, int, int, int]  # y0, y1, x0, x1 of the changed area (all slab slices)
    replaced: dict[int, np.ndarray]  # slice index -> modified HU inside the window
    region: np.ndarray  # centre slice, inside the window: the lesion mask or the anomaly's region
    info: dict[str, Any] = field(default_factory=dict)

    def slices(self, host: Case) -> dict[int, np.ndarray]:
        """Full modified HU slices of the host."""
        y0, y1, x0, x1 = self.window
        out = {}
        for k, crop in self.replaced.items():
            full = host.hu[k].astype(np.float32).copy()
            full[y0:y1, x0:x1] = crop
            out[k] = full
        return out

    def full_region(self, host: Case) -> np.ndarray:
        y0, y1, x0, x1 = self.window
        out = np.zeros(host.hu.shape[1:], dtype=bool)
        out[y0:y1, x0:x1] = self.region
        return out


def compact_edit(
    test: str, host: Case, k: int, modified: dict[int, np.ndarray], region: np.ndarray, info: dict[str, Any]
) -> Edit:
    """Crop the modified slices and the centre region to the bounding box of what changed."""
    changed = region.copy()
    for kk, m in modified.items():
        changed |= m != host.hu[kk]
    rows, cols = np.nonzero(changed)
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    crops = {kk: m[y0:y1, x0:x1].astype(np.float32) for kk, m in modified.items()}
    return Edit(test, host.name, k, (y0, y1, x0, x1), crops, region[y0:y1, x0:x1].copy(), info)


def slab_indices(case: Case, k: int) -> list[int]:
    return [int(np.clip(k + d, 0, case.hu.shape[0] - 1)) for d in range(-SLAB, SLAB + 1)]


def lesion_candidates(donor: Case, slices: tuple[int, int], cfg: EvalConfig) -> list[dict]:
    """Every (3-D tumour component, slice) cross-section at least ``min_lesion_diameter_mm`` wide."""
    labels, n = ndimage.label(donor.tumour)
    out = []
    for j in range(slices[0], slices[1] + 1):
        liver_j = donor.liver_only[j]
        liver_hu = (
            float(np.median(donor.hu[j][liver_j]))
            if liver_j.sum() > 50
            else float(np.median(donor.hu[donor.liver_only]))
        )
        for comp in np.unique(labels[j]):
            if comp == 0:
                continue
            d = equivalent_diameter_mm(labels[j] == comp, donor.spacing)
            if d >= cfg.min_lesion_diameter_mm:
                out.append({"slice": j, "component": int(comp), "donor_diameter_mm": d, "donor_liver_hu": liver_hu})
    log.info("%s: %d lesion cross-sections from %d tumour components", donor.name, len(out), n)
    return out, labels  # type: ignore[return-value]


def make_lesion_edits(
    donor: Case,
    recipient: Case,
    donor_slices: tuple[int, int],
    recipient_slices: list[int],
    tolerance_mm: float | None,
    max_pairs: int,
    cfg: EvalConfig,
    test: str,
) -> list[Edit]:
    """Transplant pairs, quota per diameter bin (max_pairs / bins), placements at random in the liver."""
    if abs(np.median(np.diff(donor.positions_mm)) - np.median(np.diff(recipient.positions_mm))) > 0.1:
        raise ValueError("donor and recipient slice spacings differ: the slab transplant maps slices one to one")
    rng = np.random.default_rng(cfg.seed)
    candidates, labels = lesion_candidates(donor, donor_slices, cfg)  # type: ignore[misc]
    combos = [
        (c, k)
        for c in candidates
        for k in recipient_slices
        if tolerance_mm is None
        or abs(recipient.body.position_mm[k] - donor.body.position_mm[c["slice"]]) <= tolerance_mm
    ]
    order = rng.permutation(len(combos))
    n_bins = len(cfg.diameter_edges_mm) + 1
    quota = int(np.ceil(max_pairs / n_bins))
    counts: dict[str, int] = {}
    scale = donor.spacing[0] / recipient.spacing[0]
    feather_px = cfg.feather_mm / recipient.spacing[0]
    margin = int(np.ceil((cfg.feather_mm + 2 * recipient.spacing[0]) / donor.spacing[0]))
    patches: dict[tuple[int, int], Any] = {}
    edits: list[Edit] = []
    for i in order:
        c, k = combos[int(i)]
        key = (c["slice"], c["component"])
        if key not in patches:
            js = slab_indices(donor, c["slice"])
            patch = cut_lesion(donor.hu[js], labels[js] == c["component"], SLAB, c["donor_liver_hu"], margin)
            patches[key] = rescale_lesion(patch, scale)
        patch = patches[key]
        diameter = equivalent_diameter_mm(patch.mask[SLAB], recipient.spacing)
        b = diameter_bin(diameter, cfg.diameter_edges_mm)
        if counts.get(b, 0) >= quota:
            continue
        corners = np.argwhere(valid_placements(recipient.liver[k], support(patch.mask[SLAB], feather_px)))
        if corners.size == 0:
            continue
        y, x = (int(v) for v in corners[rng.integers(len(corners))])
        ks = slab_indices(recipient, k)
        rec_liver_hu = float(np.median(recipient.hu[k][recipient.liver[k]]))
        t = transplant_lesion(recipient.hu[ks], recipient.liver[ks], patch, rec_liver_hu, (y, x), feather_px)
        modified = {kk: t.hu[n] for n, kk in enumerate(ks)}
        edits.append(
            compact_edit(
                test,
                recipient,
                k,
                modified,
                t.lesion_mask[SLAB],
                {
                    "diameter_mm": diameter,
                    "bin": b,
                    "donor_slice": c["slice"],
                    "component": c["component"],
                    "donor_position_mm": float(donor.body.position_mm[c["slice"]]),
                    "recipient_position_mm": float(recipient.body.position_mm[k]),
                    "contrast_hu": float(np.median(patch.hu[SLAB][patch.mask[SLAB]]) - patch.donor_liver_hu),
                },
            )
        )
        counts[b] = counts.get(b, 0) + 1
        if len(edits) >= quota * n_bins:
            break
    log.info("%s: %d pairs from %d combinations, per bin %s", test, len(edits), len(combos), counts)
    return edits


def make_synthetic_edits(host: Case, slices: list[int], per_slice: int, cfg: EvalConfig) -> list[Edit]:
    """Blob, warp and metal in the host's liver (whole disc inside the centre slice's liver);
    the same 2-D edit on each slice of the 5-slice slab."""
    rng = np.random.default_rng(cfg.seed + 1)
    sp = host.spacing[0]
    kinds = {"blob": 3 * cfg.blob_sigma_mm / sp, "warp": cfg.warp_radius_mm / sp, "metal": cfg.metal_radius_mm / sp + 1}
    edits = []
    for kind, radius in kinds.items():
        r = int(np.ceil(radius))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        footprint = yy**2 + xx**2 <= radius**2
        for n, k in enumerate(slices):
            corners = np.argwhere(valid_placements(host.liver[k], footprint))
            for m in range(per_slice if corners.size else 0):
                y, x = corners[rng.integers(len(corners))]
                centre = (float(y + r), float(x + r))
                sign = 1.0 if (n + m) % 2 == 0 else -1.0
                replaced, region = {}, None
                for kk in slab_indices(host, k):
                    if kind == "blob":
                        out, reg = gaussian_blob(
                            host.hu[kk], centre, cfg.blob_sigma_mm / sp, sign * cfg.blob_amplitude_hu
                        )
                    elif kind == "warp":
                        out, reg = disc_warp(
                            host.hu[kk], centre, radius, cfg.warp_shift_mm / sp, seed=cfg.seed + 1000 * n + m
                        )
                    else:
                        out, reg = metal_disc(host.hu[kk], centre, cfg.metal_radius_mm / sp)
                    replaced[kk] = out
                    region = reg if kk == k else region
                info = {"sign": sign} if kind == "blob" else {}
                edits.append(compact_edit(kind, host, int(k), replaced, region, info))  # type: ignore[arg-type]
    log.info("%s synthetic: %d edits on %d slices", host.name, len(edits), len(slices))
    return edits


# ---------------------------------------------------------------- scoring


@dataclass
class ViewedEdits:
    """All edits of one test through one preprocessing: images, valid, region on the view grid."""

    edits: list[Edit]
    images: torch.Tensor  # (N, 3, S, S)
    valid: torch.Tensor  # (N, 1, S, S)
    region: np.ndarray  # (N, S, S) fraction of the lesion / anomaly region per view pixel


def view_edits(edits: list[Edit], views: dict[str, SeriesView]) -> ViewedEdits:
    images, valid, region = [], [], []
    for e in edits:
        view = views[e.case]
        x, v = view.images([e.index], e.slices(view.case))
        images.append(x)
        valid.append(v)
        region.append(view.mask_fraction(e.full_region(view.case)[None])[0])
    if not edits:
        return ViewedEdits([], torch.zeros(0), torch.zeros(0), np.zeros(0))
    return ViewedEdits(edits, torch.cat(images), torch.cat(valid), np.stack(region))


# ---------------------------------------------------------------- metrics


# ---------------------------------------------------------------- small helpers


def indices_of(ranges: tuple[tuple[int, int], ...] | tuple[int, int]) -> list[int]:
    if isinstance(ranges[0], int):
        ranges = (ranges,)  # type: ignore[assignment]
    return [i for lo, hi in ranges for i in range(lo, hi + 1)]  # type: ignore[misc]

"""Training slices for the liver segmenter: CT and liver mask pairs from a data directory.

CT goes through the serving path (``load_series_volume`` for DICOM, the
scorer's NIfTI loader for NIfTI CT); masks are checked against the CT grid
(``read_nifti_mask``: a mask on another grid is refused). Both then go through
``to_model_grid`` (the segmenter's input grid); masks are resampled with the
same crop box and thresholded at 0.5. Cases and slice ranges come from
``SegmenterDataConfig`` (defaults: the MANIFEST's normal-training split;
ircadb-01 held out). Arrays are cached as .npz under ``cache_dir`` (derived
from non-commercial data: keep it under runs/, never commit it).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from app.core.files import save_npz_atomic
from app.dicom.seg import read_nifti_mask
from app.dicom.volume import load_series_volume
from models.segmenter import SegmenterConfig, resample_to_box, to_model_grid

CACHE_VERSION = 2


@dataclass(frozen=True)
class MaskedCase:
    name: str
    ct: str  # relative to data_dir: a DICOM folder or a .nii / .nii.gz file
    mask: str  # NIfTI liver mask on the CT's grid
    slices: tuple[tuple[int, int], ...] | None = None  # inclusive index ranges; None = all


@dataclass(frozen=True)
class SegmenterDataConfig:
    data_dir: str = "../shared/data"
    cache_dir: str = "runs/segmenter/cache"
    # MANIFEST "normal training" for the segmenter: ircadb-17 slices 0-75 (tumour run 78-113 left out)
    train: tuple[MaskedCase, ...] = (
        MaskedCase("ircadb-17", "ct/ircadb-17/ct-dicom", "ct/ircadb-17/masks/liver.nii.gz", ((0, 75),)),
        MaskedCase(
            "totalseg-example-3mm",
            "ct/totalseg-example/ct-3mm.nii.gz",
            "ct/totalseg-example/masks/liver-on-ct-3mm.nii.gz",
        ),
        MaskedCase(
            "totalseg-example-dicom",
            "ct/totalseg-example/ct-dicom",
            "ct/totalseg-example/masks/liver-on-ct-dicom.nii.gz",
        ),
    )
    heldout: MaskedCase = MaskedCase("ircadb-01", "ct/ircadb-01/ct-dicom", "ct/ircadb-01/masks/liver.nii.gz")

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> SegmenterDataConfig:
        def case(c: dict) -> MaskedCase:
            slices = tuple(tuple(r) for r in c["slices"]) if c["slices"] else None
            return MaskedCase(c["name"], c["ct"], c["mask"], slices)  # type: ignore[arg-type]

        return cls(d["data_dir"], d["cache_dir"], tuple(case(c) for c in d["train"]), case(d["heldout"]))


@dataclass
class MaskedVolume:
    hu: np.ndarray  # (Z, Y, X) float32, Z ascending along the normal
    mask: np.ndarray  # (Z, Y, X) uint8 on the same grid
    pixel_spacing_mm: tuple[float, float]  # (row, column)
    positions_mm: np.ndarray  # (Z,)


@dataclass
class SegmenterSlices:
    images: torch.Tensor  # (N, C, S, S) float32 in [-1, 1]
    masks: torch.Tensor  # (N, 1, S, S) float32 in {0, 1}
    cases: list[str]  # (N,)
    slice_indices: list[int]  # (N,)

    def __len__(self) -> int:
        return self.images.shape[0]


def load_masked_volume(case: MaskedCase, data_dir: Path) -> MaskedVolume:
    """CT and liver mask of one case, the mask checked against the CT's grid."""
    ct_path, mask_path = data_dir / case.ct, data_dir / case.mask
    if ct_path.is_dir():
        volume = load_series_volume(sorted(p for p in ct_path.iterdir() if p.is_file()))
        mask = read_nifti_mask(mask_path, volume.geometry)
        positions = np.asarray(volume.geometry.slice_positions_mm)
        return MaskedVolume(volume.hu, mask, volume.geometry.pixel_spacing_mm, positions)
    from workers.training.scorer_data import load_nifti_volume  # the scorer's NIfTI CT loader

    ct, mask_volume = load_nifti_volume(ct_path), load_nifti_volume(mask_path)
    if ct.hu.shape != mask_volume.hu.shape or not np.allclose(ct.positions_mm, mask_volume.positions_mm, atol=0.1):
        raise ValueError(f"case {case.name}: mask grid {mask_volume.hu.shape} differs from the CT's {ct.hu.shape}")
    return MaskedVolume(ct.hu, (mask_volume.hu > 0.5).astype(np.uint8), ct.pixel_spacing_mm, ct.positions_mm)


def training_liver_hu(data: SegmenterDataConfig, repo_root: Path) -> list[float]:
    """[lowest, highest] liver median HU over the training cases (on their selected slices): the contrast
    phases the segmenter saw, before its intensity augmentation. The worker's contrast note compares a
    series' liver with it (``workers.serving.input_checks``, evidence only)."""
    data_dir = (repo_root / data.data_dir).resolve()
    medians = []
    for case in data.train:
        volume = load_masked_volume(case, data_dir)
        idx = selected(case, len(volume.mask))
        liver = volume.mask[idx] > 0
        if liver.any():
            medians.append(float(np.median(volume.hu[idx][liver])))
    if not medians:
        raise ValueError("no training case holds liver")
    return [round(min(medians), 1), round(max(medians), 1)]


def selected(case: MaskedCase, n_slices: int) -> list[int]:
    from workers.training.scorer_data import select_ranges

    return select_ranges(case.name, case.slices, n_slices)


def prepare_masked_case(
    case: MaskedCase, config: SegmenterConfig, data: SegmenterDataConfig, repo_root: Path
) -> dict[str, np.ndarray]:
    """Model-grid images and masks of one case (all slices as context, selected ones returned); cached."""
    key = json.dumps([CACHE_VERSION, asdict(case), config.as_json()], sort_keys=True)
    cache = repo_root / data.cache_dir / f"{case.name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if cache.exists():
        with np.load(cache) as arrays:
            return {k: arrays[k] for k in arrays.files}
    volume = load_masked_volume(case, (repo_root / data.data_dir).resolve())
    images, box = to_model_grid(volume.hu, volume.pixel_spacing_mm, volume.positions_mm, config)
    masks = resample_to_box(torch.from_numpy(volume.mask).float(), box, fill=0.0) > 0.5  # (Z, S, S)
    idx = selected(case, volume.hu.shape[0])
    arrays = {
        "images": images[idx].numpy().astype(np.float16),
        "masks": masks[idx, None].numpy(),
        "slice_indices": np.asarray(idx),
    }
    save_npz_atomic(cache, arrays)  # two folds may prepare the same case at once
    return arrays


def build_training_slices(config: SegmenterConfig, data: SegmenterDataConfig, repo_root: Path) -> SegmenterSlices:
    parts = [(case.name, prepare_masked_case(case, config, data, repo_root)) for case in data.train]
    return SegmenterSlices(
        images=torch.from_numpy(np.concatenate([a["images"] for _, a in parts])).float(),
        masks=torch.from_numpy(np.concatenate([a["masks"] for _, a in parts])).float(),
        cases=[name for name, a in parts for _ in range(len(a["slice_indices"]))],
        slice_indices=[int(i) for _, a in parts for i in a["slice_indices"]],
    )


def describe(slices: SegmenterSlices) -> dict:
    per_case: dict[str, list[int]] = {}
    has_liver = (slices.masks.flatten(1).sum(1) > 0).tolist()
    for name, liver in zip(slices.cases, has_liver, strict=True):
        per_case.setdefault(name, [0, 0])
        per_case[name][0] += 1
        per_case[name][1] += int(liver)
    return {"n_slices": len(slices), "per_case": {k: {"slices": n, "with_liver": w} for k, (n, w) in per_case.items()}}


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.85, 1.15)  # zoom, also covers in-plane spacing differences
    translate: float = 0.08  # fraction of the field
    intensity_shift: float = 0.1  # added to the windowed image ([-1, 1] units)
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    noise_std: float = 0.03
    hflip: bool = False  # no left-right flip: the liver lies on the patient's right
    # Contrast phase: the liver is ~120 HU in portal-venous CT and ~55 HU unenhanced (totalseg-s0009), while
    # fat, air and bone do not move; a shift of the liver alone (windowed units: 0.1 = 20 HU at width 400)
    # makes the network read the liver's shape and neighbours rather than its enhancement.
    liver_shift_p: float = 0.5
    liver_shift: tuple[float, float] = (-0.35, 0.15)
    # Field of view: a reconstruction cropped to a box (totalseg-s0009 is 178 mm wide) puts air right against
    # the liver; with this probability everything outside a random box of 45-100 % per side becomes air.
    fov_crop_p: float = 0.25
    fov_crop: tuple[float, float] = (0.45, 1.0)
    # The liver's dome: near the diaphragm the liver is ringed by lung. No redistributable case shows it (the
    # TotalSegmentator sample and s0009 both end inside the liver), so with this probability the tissue beyond a
    # thin rim round the liver, inside the body wall and on a random side of the liver, becomes air, and the
    # liver may shrink by up to ``lung_shrink_px`` into it (a smaller, higher cross-section). 0: off (the folds).
    lung_p: float = 0.0
    lung_rim_px: tuple[float, float] = (1.0, 3.0)  # the diaphragm between liver and lung, at 2 mm per pixel
    lung_wall_px: tuple[float, float] = (6.0, 14.0)  # chest wall (muscle, ribs) that stays tissue
    lung_shrink_px: float = 8.0

    def __post_init__(self) -> None:
        if self.lung_rim_px[0] > self.lung_rim_px[1] or self.lung_wall_px[0] > self.lung_wall_px[1]:
            raise ValueError(f"lung_rim_px and lung_wall_px must be (low, high), got {self.lung_rim_px}, "
                             f"{self.lung_wall_px}")  # fmt: skip
        if min(*self.lung_rim_px, *self.lung_wall_px, self.lung_shrink_px) < 0:
            raise ValueError("lung_rim_px, lung_wall_px and lung_shrink_px must be >= 0")
        for name in ("liver_shift_p", "fov_crop_p", "lung_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.fov_crop[0] <= self.fov_crop[1] <= 1:
            raise ValueError(f"fov_crop must be 0 < low <= high <= 1, got {self.fov_crop}")
        if self.liver_shift[0] > self.liver_shift[1]:
            raise ValueError(f"liver_shift must be (low, high) with low <= high, got {self.liver_shift}")

    def as_json(self) -> dict:
        return asdict(self)


def augment(
    x: torch.Tensor, y: torch.Tensor, config: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine (same for image and mask) and intensity jitter; x (B, C, S, S), y (B, 1, S, S)."""
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return uniform_batch(b, lo, hi, gen)

    angle = uniform(-config.rotate_deg, config.rotate_deg) * math.pi / 180
    scale = uniform(*config.scale)
    shift = uniform(-config.translate, config.translate), uniform(-config.translate, config.translate)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[0] * 2], 1), torch.stack([sin, cos, shift[1] * 2], 1)], 1)
    theta = theta.to(x.device, x.dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0  # air outside
    y = (F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).to(y.dtype)
    x = shift_liver(x, y, uniform(*config.liver_shift) * (torch.rand(b, generator=gen) < config.liver_shift_p))
    if config.lung_p > 0:
        x, y = surround_with_lung(x, y, config, gen)
    x, y = crop_field_of_view(x, y, config, gen)
    gain = uniform(*config.intensity_scale).to(x.device)[:, None, None, None]
    offset = uniform(-config.intensity_shift, config.intensity_shift).to(x.device)[:, None, None, None]
    noise = torch.randn(x.shape, generator=gen).to(x.device) * config.noise_std
    return (x * gain + offset + noise).clamp(-1.0, 1.0), y


def shift_liver(x: torch.Tensor, y: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add ``shift`` (B,) inside the liver of every channel; x (B, C, S, S), y (B, 1, S, S).

    The centre slice's mask stands for its neighbours (3-6 mm away); its edge is softened over 5 px (one
    pixel of partial volume each side at 2 mm) so that the shift makes no edge the CT does not have.
    """
    soft = F.avg_pool2d(y, 5, stride=1, padding=2, count_include_pad=False)  # (B, 1, S, S)
    return (x + soft * shift.to(x.device, x.dtype)[:, None, None, None]).clamp(-1.0, 1.0)


def surround_with_lung(
    x: torch.Tensor, y: torch.Tensor, config: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Air (-1) round the liver as at its dome, in a ``lung_p`` share of the slices that hold liver.

    x (B, C, S, S), y (B, 1, S, S). Air replaces, in every channel, the tissue farther than a rim from the
    centre slice's liver, farther than a wall from the body's edge, not bright (bone and enhanced vessels stay)
    and on one side of a random line near the liver's centre (the lungs sit behind and beside the dome; the
    other side, heart or stomach, stays). The rim is measured from the liver shrunk by 0-``lung_shrink_px``
    pixels, so air may take the liver's edge on that side (a smaller cross-section); the label is the liver
    that stays tissue. Distances are Euclidean (scipy), so the air has the lung's rounded edges."""
    b, _, h, w = x.shape
    pick = (torch.rand(b, generator=gen) < config.lung_p) & (y.flatten(1).sum(1) > 0)
    draws = torch.rand(b, 5, generator=gen).numpy()  # shrink, rim, wall, angle, offset
    if not pick.any():
        return x, y
    centre = x[:, x.shape[1] // 2].detach().cpu().numpy()  # (B, S, S)
    liver = y[:, 0].detach().cpu().numpy() > 0.5
    rows, cols = np.mgrid[0:h, 0:w]
    lung = np.zeros((b, h, w), dtype=bool)
    for i in np.flatnonzero(pick.numpy()):
        inside = ndimage.distance_transform_edt(liver[i])  # (S, S) pixels to the liver's edge
        shrink = min(draws[i, 0] * config.lung_shrink_px, 0.8 * inside.max())  # never erase it all
        rim = config.lung_rim_px[0] + draws[i, 1] * (config.lung_rim_px[1] - config.lung_rim_px[0])
        wall = config.lung_wall_px[0] + draws[i, 2] * (config.lung_wall_px[1] - config.lung_wall_px[0])
        core = inside > shrink
        away = ndimage.distance_transform_edt(~core) > rim
        body = ndimage.binary_fill_holes(centre[i] > -0.95)
        deep = ndimage.distance_transform_edt(body) > wall
        cy, cx = rows[liver[i]].mean(), cols[liver[i]].mean()
        angle = draws[i, 3] * 2 * math.pi
        offset = (draws[i, 4] * 0.2 - 0.15) * h  # > 0: the line passes beyond the centre, less air
        side = (rows - cy) * math.sin(angle) + (cols - cx) * math.cos(angle) > offset
        lung[i] = away & deep & side & (centre[i] < 0.55)  # 0.55: about 170 HU at the default window
    air = torch.from_numpy(lung).to(x.device)[:, None]  # (B, 1, S, S)
    return torch.where(air, torch.full_like(x, -1.0), x), y * (~air).to(y.dtype)


def uniform_batch(b: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    """(b,) uniform draws in [lo, hi)."""
    return torch.rand(b, generator=gen) * (hi - lo) + lo


def crop_field_of_view(
    x: torch.Tensor, y: torch.Tensor, config: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Air (-1) and no liver outside a random box, in a ``fov_crop_p`` share of the batch."""
    b, _, h, w = x.shape
    crop = torch.rand(b, generator=gen) < config.fov_crop_p
    height, width = uniform_batch(b, *config.fov_crop, gen) * h, uniform_batch(b, *config.fov_crop, gen) * w
    top, left = torch.rand(b, generator=gen) * (h - height), torch.rand(b, generator=gen) * (w - width)
    rows, cols = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
    inside_r = (rows[None] >= top[:, None]) & (rows[None] < (top + height)[:, None])  # (B, S)
    inside_c = (cols[None] >= left[:, None]) & (cols[None] < (left + width)[:, None])
    keep = (inside_r[:, :, None] & inside_c[:, None, :]) | ~crop[:, None, None]  # (B, S, S)
    keep = keep[:, None].to(x.device)
    return torch.where(keep, x, torch.full_like(x, -1.0)), y * keep.to(y.dtype)

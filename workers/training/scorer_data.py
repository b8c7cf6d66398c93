"""Build the scorer's slice sets (normal training, held-out normal) from a data directory.

One code path with serving: DICOM series go through ``load_series_volume``
(the serving loader); NIfTI cases are reoriented to the same (Z, Y, X)
convention (rows towards posterior, columns towards the patient's left, Z
ascending towards the head). Every case then goes through
``find_body_position`` (whole series) and ``preprocess_series``.

Which cases and slices form each split comes from ``ScorerDataConfig``
(defaults follow the data MANIFEST split); paths are relative to
``data_dir``. Preprocessed arrays are cached as .npz under ``cache_dir``
(keep it under runs/: derived from non-commercial data, never committed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import torch

from app.core.files import save_npz_atomic
from app.dicom.volume import load_series_volume
from models.body_position import BodyPositionConfig, find_body_position
from models.transforms import PreprocessConfig, preprocess_series

CACHE_VERSION = 1


@dataclass(frozen=True)
class CaseSpec:
    name: str
    path: str  # relative to data_dir: a DICOM folder or a .nii / .nii.gz file
    slices: tuple[tuple[int, int], ...] | None = None  # inclusive index ranges; None = all


@dataclass(frozen=True)
class ScorerDataConfig:
    data_dir: str = "../shared/data"
    cache_dir: str = "runs/cache"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    body_position: BodyPositionConfig = field(default_factory=BodyPositionConfig)
    train: tuple[CaseSpec, ...] = (
        CaseSpec("ircadb-17", "ct/ircadb-17/ct-dicom", ((0, 75),)),
        CaseSpec("totalseg-example-3mm", "ct/totalseg-example/ct-3mm.nii.gz"),
        CaseSpec("cptac-c3n-00247-chest", "ct/cptac-c3n-00247-chest/ct-dicom"),
        CaseSpec("johndoe-chest", "ct/johndoe-chest/ct.nii.gz"),
    )
    heldout: tuple[CaseSpec, ...] = (CaseSpec("ircadb-01", "ct/ircadb-01/ct-dicom", ((0, 45), (126, 128))),)

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ScorerDataConfig:

        def cases(items: list[dict]) -> tuple[CaseSpec, ...]:
            return tuple(
                CaseSpec(c["name"], c["path"], tuple(tuple(r) for r in c["slices"]) if c["slices"] else None)
                for c in items
            )

        return cls(
            data_dir=d["data_dir"],
            cache_dir=d["cache_dir"],
            preprocess=PreprocessConfig.from_json(d["preprocess"]),
            body_position=BodyPositionConfig(**d["body_position"]),
            train=cases(d["train"]),
            heldout=cases(d["heldout"]),
        )


@dataclass
class CaseVolume:
    hu: np.ndarray  # (Z, Y, X) float32, Z ascending towards the head
    pixel_spacing_mm: tuple[float, float]  # (row, column)
    positions_mm: np.ndarray  # (Z,)


@dataclass
class SliceSet:
    images: torch.Tensor  # (N, 3, S, S) float32 in [-1, 1]
    valid: torch.Tensor  # (N, 1, S, S) bool
    positions: torch.Tensor  # (N,) normalised position from the lung base; NaN unknown
    cases: list[str]  # (N,) case name of each slice
    slice_indices: list[int]  # (N,) index in the case's series

    def __len__(self) -> int:
        return self.images.shape[0]


def load_nifti_volume(path: Path) -> CaseVolume:
    """NIfTI -> (Z, Y, X) in the DICOM convention (reoriented to LPS, then transposed)."""
    image = cast(nib.Nifti1Image, nib.load(str(path)))
    current = nib.orientations.io_orientation(image.affine)
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))
    image = image.as_reoriented(nib.orientations.ornt_transform(current, target))
    zooms = image.header.get_zooms()
    hu = np.asarray(image.dataobj, dtype=np.float32).transpose(2, 1, 0)  # (X, Y, Z) -> (Z, Y, X)
    positions = float(image.affine[2, 3]) + np.arange(hu.shape[0]) * float(zooms[2])
    return CaseVolume(np.ascontiguousarray(hu), (float(zooms[1]), float(zooms[0])), positions)


def load_case_volume(path: Path) -> CaseVolume:
    """A DICOM series folder (via the serving loader) or a NIfTI file."""
    if path.is_dir():
        volume = load_series_volume(sorted(p for p in path.iterdir() if p.is_file()))
        geometry = volume.geometry
        return CaseVolume(volume.hu, geometry.pixel_spacing_mm, np.asarray(geometry.slice_positions_mm))
    if path.name.endswith((".nii", ".nii.gz")):
        return load_nifti_volume(path)
    raise ValueError(f"{path}: expected a DICOM folder or a .nii/.nii.gz file")


def select_ranges(name: str, ranges: tuple[tuple[int, int], ...] | None, n_slices: int) -> list[int]:
    """Slice indices of inclusive ranges (all when None); shared with the segmenter's data."""
    if ranges is None:
        return list(range(n_slices))
    out = [i for lo, hi in ranges for i in range(lo, hi + 1) if 0 <= i < n_slices]
    if not out:
        raise ValueError(f"case {name}: slice ranges {ranges} select nothing of {n_slices} slices")
    return out


def selected_indices(spec: CaseSpec, n_slices: int) -> list[int]:
    return select_ranges(spec.name, spec.slices, n_slices)


def _cache_key(spec: CaseSpec, config: ScorerDataConfig) -> str:
    payload = json.dumps(
        [CACHE_VERSION, asdict(spec), config.preprocess.as_json(), asdict(config.body_position)],
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def prepare_case(spec: CaseSpec, config: ScorerDataConfig, repo_root: Path) -> dict[str, np.ndarray]:
    """Preprocessed arrays of one case, from the cache when present (atomic write)."""
    cache = (repo_root / config.cache_dir / f"{spec.name}-{_cache_key(spec, config)}.npz").resolve()
    if cache.exists():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    volume = load_case_volume((repo_root / config.data_dir / spec.path).resolve())
    position = find_body_position(volume.hu, volume.pixel_spacing_mm, volume.positions_mm, config.body_position)
    indices = selected_indices(spec, volume.hu.shape[0])
    pre = preprocess_series(volume.hu, volume.pixel_spacing_mm, volume.positions_mm, config.preprocess, indices)
    arrays = {
        "images": pre.images.numpy().astype(np.float16),
        "valid": pre.valid.numpy(),
        "positions": position.normalised[indices].astype(np.float32),
        "slice_indices": np.asarray(indices),
        "landmark": np.asarray(position.landmark),
    }
    save_npz_atomic(cache, arrays)
    return arrays


def build_slice_set(config: ScorerDataConfig, split: str, repo_root: Path) -> SliceSet:
    """All slices of the split ("train" or "heldout"), concatenated in case order."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    specs = config.train if split == "train" else config.heldout
    parts = [(spec, prepare_case(spec, config, repo_root)) for spec in specs]
    return SliceSet(
        images=torch.from_numpy(np.concatenate([a["images"] for _, a in parts])).float(),
        valid=torch.from_numpy(np.concatenate([a["valid"] for _, a in parts])),
        positions=torch.from_numpy(np.concatenate([a["positions"] for _, a in parts])),
        cases=[spec.name for spec, a in parts for _ in range(len(a["slice_indices"]))],
        slice_indices=[int(i) for _, a in parts for i in a["slice_indices"]],
    )


def describe(slices: SliceSet) -> dict:
    """Data description for checkpoint metadata and model cards."""
    per_case: dict[str, int] = {}
    for name in slices.cases:
        per_case[name] = per_case.get(name, 0) + 1
    known = torch.isfinite(slices.positions)
    return {
        "n_slices": len(slices),
        "per_case": per_case,
        "unknown_position": int((~known).sum()),
        "position_range": [float(slices.positions[known].min()), float(slices.positions[known].max())]
        if bool(known.any())
        else None,
    }

"""Training data of the patch scorers: normal livers on the 1 mm liver grid, and a patch sampler.

Each case is a CT (DICOM folder or NIfTI), its liver mask, and the slice ranges that are normal liver
(``../shared/data/MANIFEST.md``: leave ~3 mm between a tumour run and a normal slice). Patches are drawn
with their centre on a normal slice's liver; each patient is drawn equally often, so one long series
does not make the model a model of that patient.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from models.body_position import find_body_position
from models.patch_gan.grid import GridConfig, LiverGrid, liver_grid, patch_conditions
from models.patch_gan.score import extract_patches, pad_for_patches
from workers.training.scorer_data import load_case_volume, load_nifti_volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchCase:
    name: str
    ct: str  # relative to the data folder: DICOM folder or NIfTI
    liver: str  # NIfTI mask on the CT's grid
    normal: tuple[tuple[int, int], ...] | None = None  # inclusive slice ranges of normal liver; None: all
    licence: str = ""


# Normal livers of ../shared/data (MANIFEST.md), by patient. Shippable: only the CC BY / Apache cases.
NORMAL_CASES: dict[str, PatchCase] = {
    c.name: c
    for c in (
        PatchCase(
            "ircadb-07", "ct/ircadb-07/ct-dicom", "ct/ircadb-07/masks/liver.nii.gz", ((48, 145),), "CC BY-NC-ND 4.0"
        ),
        PatchCase(
            "ircadb-17", "ct/ircadb-17/ct-dicom", "ct/ircadb-17/masks/liver.nii.gz", ((1, 75),), "CC BY-NC-ND 4.0"
        ),
        PatchCase(
            "ircadb-01", "ct/ircadb-01/ct-dicom", "ct/ircadb-01/masks/liver.nii.gz", ((27, 45),), "CC BY-NC-ND 4.0"
        ),
        PatchCase(
            "totalseg-s0009", "ct/totalseg-s0009/ct.nii.gz", "ct/totalseg-s0009/masks/liver.nii.gz", None, "CC BY 4.0"
        ),
        PatchCase(
            "totalseg-example",
            "ct/totalseg-example/ct-3mm.nii.gz",
            "ct/totalseg-example/masks/liver-on-ct-3mm.nii.gz",
            None,
            "Apache-2.0 (masks: TotalSegmentator predictions)",
        ),
    )
}
SHIPPABLE = ("totalseg-s0009", "totalseg-example")
# the committed sample (samples/, Apache-2.0): demo and tests, with data_dir = samples/
SAMPLE = PatchCase(
    "sample", "totalseg-example/ct-dicom", "totalseg-example/masks/liver-on-ct-dicom.nii.gz", None, "Apache-2.0"
)
NORMAL_CASES[SAMPLE.name] = SAMPLE


@dataclass
class PreparedCase:
    name: str
    grid: LiverGrid
    normal: np.ndarray  # (Z,) bool: slices patches may be centred on
    hu: np.ndarray  # (Z, Y, X) kept for evaluation edits
    spacing: tuple[float, float]
    positions_mm: np.ndarray
    body_position: np.ndarray  # (Z,) normalised
    liver_mask: np.ndarray  # (Z, Y, X) bool on the series grid


def normal_slices(case: PatchCase, n: int) -> np.ndarray:
    keep = np.zeros(n, dtype=bool)
    for lo, hi in case.normal or ((0, n - 1),):
        keep[max(lo, 0) : min(hi, n - 1) + 1] = True
    return keep


def prepare_case(case: PatchCase, data_dir: Path, grid: GridConfig) -> PreparedCase:
    volume = load_case_volume(data_dir / case.ct)
    liver = load_nifti_volume(data_dir / case.liver).hu > 0.5
    if liver.shape != volume.hu.shape:
        raise ValueError(f"{case.name}: liver mask {liver.shape} is not on the CT grid {volume.hu.shape}")
    body = find_body_position(volume.hu, volume.pixel_spacing_mm, volume.positions_mm)
    g = liver_grid(volume.hu, volume.pixel_spacing_mm, volume.positions_mm, liver, body.normalised, grid)
    normal = normal_slices(case, volume.hu.shape[0]) & g.liver_slices
    log.info(
        "%s: grid %s, %d normal liver slices, liver median %.0f HU",
        case.name,
        tuple(g.images.shape),
        normal.sum(),
        g.liver_median_hu,
    )
    return PreparedCase(
        case.name, g, normal, volume.hu, volume.pixel_spacing_mm, volume.positions_mm, body.normalised, liver
    )


class PatchSampler:
    """Random normal-liver patches (B, C, P, P) with their conditions (B, 4), patients drawn equally often."""

    def __init__(self, cases: list[PreparedCase], patch: int, seed: int = 0) -> None:
        if not cases:
            raise ValueError("no training cases")
        self.cases, self.patch = cases, patch
        self.centres = []
        self.padded = [pad_for_patches(c.grid.images, patch) for c in cases]
        for c in cases:
            region = c.grid.liver & torch.as_tensor(c.normal)[:, None, None]
            idx = torch.nonzero(region[:, ::2, ::2]) * torch.tensor([1, 2, 2])  # every 2nd pixel is plenty
            if idx.shape[0] == 0:
                raise ValueError(f"{c.name}: no normal liver pixel to draw patches from")
            self.centres.append(idx)
        self.gen = torch.Generator().manual_seed(seed)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        which = torch.randint(len(self.cases), (batch,), generator=self.gen)
        xs, cs = [], []
        for i in which.unique().tolist():
            n = int((which == i).sum())
            centres = self.centres[i][torch.randint(self.centres[i].shape[0], (n,), generator=self.gen)]
            corners = centres.clone()
            corners[:, 1:] -= self.patch // 2
            g = self.cases[i].grid
            xs.append(extract_patches(self.padded[i], corners, self.patch))
            cs.append(patch_conditions(g.conditions[centres[:, 0]], centres[:, 1:], tuple(g.liver.shape[1:])))
        return torch.cat(xs), torch.cat(cs)

    def describe(self) -> dict:
        return {
            c.name: {
                "normal_slices": int(c.normal.sum()),
                "centres": int(k.shape[0]),
                "liver_median_hu": c.grid.liver_median_hu,
            }
            for c, k in zip(self.cases, self.centres, strict=True)
        }


def case_json(case: PatchCase) -> dict:
    return asdict(case)

"""Score inside the liver: the segmenter's own mask as the region a liver-restricted scorer looks at.

Why: in the 128 px liver view the top 1 % of an autoencoder's heat-map mostly
falls on the body wall, ribs, vessels and the lung base, whose residuals are
larger and vary more from slice to slice than a lesion's. Restricted to the
predicted liver (holes filled, so a lesion the segmenter leaves out stays
inside; eroded so the liver's own edge does not dominate), the same heat-maps
ranked position-matched lesions of 15 mm and more at 0.65 instead of 0.51
(reports/scorer-liver/REPORT.md). No ground truth is used: the mask is the
prediction of the segmenter the series is pinned to, and the threshold must be
calibrated with that same segmenter (its sha256 is stored beside the threshold).
A slice without predicted liver scores 0; a series without any goes to a radiologist (``route.decide``:
``no_liver_found``), since a score of 0 there would accept it unseen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from models.transforms import PreprocessConfig, mask_in_view, region_from_fraction

ROI_KEY = "roi"  # checkpoint metadata key; absent: the score looks at the whole view


@dataclass(frozen=True)
class LiverRoi:
    erosion_mm: float = 3.0
    segmenter_sha256: str = ""  # the segmenter the threshold was calibrated with
    # calibrated inside reference (ground-truth) livers, not one segmenter's: valid with any segmenter
    # (the patch scorers; a segmenter's bad mask moves scores up, towards a radiologist)
    reference_masks: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"kind": "liver", "erosion_mm": self.erosion_mm, "segmenter_sha256": self.segmenter_sha256,
                "reference_masks": self.reference_masks}  # fmt: skip

    def calibrated_for(self, segmenter_sha256: str) -> bool:
        return self.reference_masks or segmenter_sha256 == self.segmenter_sha256


def roi_of(metadata: dict[str, Any]) -> LiverRoi | None:
    spec = metadata.get(ROI_KEY)
    if not spec:
        return None
    if spec.get("kind") != "liver":
        raise ValueError(f"unknown scoring region {spec.get('kind')!r}")
    return LiverRoi(float(spec["erosion_mm"]), str(spec.get("segmenter_sha256", "")), bool(spec.get("reference_masks")))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(Z, Y, X) -> bool, holes filled slice by slice (a lesion the segmenter left out is inside its liver)."""
    return np.stack([ndimage.binary_fill_holes(s) for s in np.asarray(mask, dtype=bool)])


def roi_valid(
    roi: LiverRoi,
    liver: np.ndarray,
    hu: np.ndarray | torch.Tensor,
    pixel_spacing_mm: tuple[float, float],
    preprocess: PreprocessConfig,
    indices: list[int] | None = None,
) -> torch.Tensor:
    """(N, 1, S, S) bool on the scorer's view: the filled, eroded liver of the centre slices ``indices``."""
    return mask_in_view(fill_holes(liver), hu, pixel_spacing_mm, preprocess, indices, roi.erosion_mm)


def roi_from_fraction(roi: LiverRoi, fraction: np.ndarray, preprocess: PreprocessConfig) -> torch.Tensor:
    """The same region from masks already resampled into the view (``SeriesView.mask_fraction`` of a
    filled mask, (N, S, S)): at least half inside, then eroded."""
    return region_from_fraction(fraction, preprocess, roi.erosion_mm)

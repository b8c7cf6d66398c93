"""Lung-base landmark on real CT with different coverage (skipped without the data).

Anatomy: the posterior lung recesses reach below the liver dome, so the lung
base (first slice with >= 10 cm^2 of lung) lies caudal to the top of the liver,
inside the liver's z-range. Measured (2026-11-21): ircadb-01 38.8 mm,
ircadb-17 63.1 mm, totalseg-example 3 mm 16.0 mm below the liver top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.body_position import find_body_position
from models.transforms import liver_view, tissue_centroid
from workers.training.scorer_data import load_case_volume, load_nifti_volume

WITH_LIVER = [
    ("ct/ircadb-01/ct-dicom", "ct/ircadb-01/masks/liver.nii.gz"),
    ("ct/ircadb-17/ct-dicom", "ct/ircadb-17/masks/liver.nii.gz"),
    ("ct/totalseg-example/ct-3mm.nii.gz", "ct/totalseg-example/masks/liver-on-ct-3mm.nii.gz"),
]


@pytest.mark.parametrize(("ct", "liver"), WITH_LIVER)
def test_lung_base_lies_just_below_liver_top(data_dir: Path, ct: str, liver: str) -> None:
    volume = load_case_volume(data_dir / ct)
    pos = find_body_position(volume.hu, volume.pixel_spacing_mm, volume.positions_mm)
    mask = load_nifti_volume(data_dir / liver)
    liver_z = mask.positions_mm[np.flatnonzero(mask.hu.reshape(mask.hu.shape[0], -1).any(1))]
    if ct.endswith(".nii.gz"):  # same NIfTI grid: compare in the mask's own coordinates
        assert np.allclose(mask.positions_mm, volume.positions_mm)
    assert pos.landmark == "lung_base" and pos.landmark_mm is not None
    below_top = liver_z.max() - pos.landmark_mm
    assert 0.0 <= below_top <= 80.0, f"lung base {below_top:.1f} mm below the liver top"
    assert pos.landmark_mm > liver_z.min()


@pytest.mark.parametrize("ct", ["ct/cptac-c3n-00247-chest/ct-dicom", "ct/johndoe-chest/ct.nii.gz"])
def test_chest_series_find_the_base_near_their_caudal_end(data_dir: Path, ct: str) -> None:
    volume = load_case_volume(data_dir / ct)
    pos = find_body_position(volume.hu, volume.pixel_spacing_mm, volume.positions_mm)
    assert pos.landmark == "lung_base"
    extent = volume.positions_mm[-1] - volume.positions_mm[0]
    # both series start in the upper abdomen and reach the lung apex: the base is in the lower third
    assert 0 < pos.landmark_mm - volume.positions_mm[0] < extent / 3
    assert pos.lung_area_cm2.max() > 150


def test_abdomen_slab_without_lung_gives_unknown(data_dir: Path) -> None:
    volume = load_case_volume(data_dir / "ct/totalseg-example/ct-dicom")  # 20 JPEG 2000 slices, liver
    pos = find_body_position(volume.hu, volume.pixel_spacing_mm, volume.positions_mm)
    assert pos.landmark == "none" and np.isnan(pos.position_mm).all()


def test_crop_with_wrong_origin_still_gets_the_same_anatomy(data_dir: Path) -> None:
    # ct-3mm-crop holds slices 82-111 of ct-3mm but keeps ct-3mm's origin in its header
    full = load_case_volume(data_dir / "ct/totalseg-example/ct-3mm.nii.gz")
    crop = load_case_volume(data_dir / "ct/totalseg-example/ct-3mm-crop.nii.gz")
    p_full = find_body_position(full.hu, full.pixel_spacing_mm, full.positions_mm)
    p_crop = find_body_position(crop.hu, crop.pixel_spacing_mm, crop.positions_mm)
    np.testing.assert_allclose(p_crop.position_mm[-10:], p_full.position_mm[82:][-10:], atol=3.0)


@pytest.mark.parametrize(("ct", "liver"), WITH_LIVER)
def test_liver_view_holds_most_of_the_liver(data_dir: Path, ct: str, liver: str) -> None:
    volume = load_case_volume(data_dir / ct)
    mask = load_nifti_volume(data_dir / liver)
    view = liver_view()
    cy, cx = tissue_centroid(torch.as_tensor(volume.hu), volume.pixel_spacing_mm)
    _, rows, cols = np.nonzero(mask.hu > 0)
    half = view.size * view.pixel_mm / 2
    dy = rows * volume.pixel_spacing_mm[0] - (cy + view.centre_offset_mm[0])
    dx = cols * volume.pixel_spacing_mm[1] - (cx + view.centre_offset_mm[1])
    assert float(((np.abs(dy) < half) & (np.abs(dx) < half)).mean()) > 0.9

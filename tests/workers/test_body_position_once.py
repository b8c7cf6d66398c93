"""The worker finds a series' body position once: the coverage check and the patch scorer take the one it
computed (``find_body_position`` is most of the coverage check's cost) and give what they gave computing it
themselves. Real CT: the Apache-2.0 sample and the committed deviation scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import models.input_checks as input_checks
import workers.inference.scorer as scorer
from app.dicom.seg import read_nifti_mask
from app.dicom.volume import load_series_volume
from models.body_position import find_body_position
from workers.inference.patch_scorer import load_patch_scorer

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "totalseg-example"


@pytest.fixture(scope="module")
def sample():  # type: ignore[no-untyped-def]
    volume = load_series_volume(sorted((SAMPLE / "ct-dicom").iterdir()))
    g = volume.geometry
    liver = read_nifti_mask(SAMPLE / "masks" / "liver-on-ct-dicom.nii.gz", g, label="liver")
    return volume, liver, find_body_position(volume.hu, g.pixel_spacing_mm, g.slice_positions_mm)


def _never(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("find_body_position ran again although the caller passed the series' body position")


def test_coverage_reuses_the_given_body_position(sample, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    volume, _, body = sample
    g = volume.geometry
    own = input_checks.coverage_of(volume.hu, g.pixel_spacing_mm, g.slice_positions_mm)
    monkeypatch.setattr(input_checks, "find_body_position", _never)
    given = input_checks.coverage_of(volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, body=body)
    assert (given.base_index, given.base_inside) == (own.base_index, own.base_inside)
    np.testing.assert_array_equal(given.position_mm, own.position_mm)


def test_the_patch_scorer_reuses_the_given_body_position(sample, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    volume, liver, body = sample
    g = volume.geometry
    model, metadata = load_patch_scorer(ROOT / "models" / "weights" / "deviation.pt")
    args = (model, volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, metadata)
    own = scorer.score_volume(*args, liver=liver)
    monkeypatch.setattr(scorer, "find_body_position", _never)
    given = scorer.score_volume(*args, liver=liver, body=body)
    np.testing.assert_array_equal(given.slice_scores, own.slice_scores)
    np.testing.assert_array_equal(given.positions, own.positions)
    assert given.series_score == own.series_score and given.landmark == own.landmark

"""The serving side of the input checks: reasons as DecisionReasons, and the partial-coverage policy."""

from __future__ import annotations

import numpy as np

from app.core.config import Settings
from app.db.states import DecisionReason
from app.dicom.volume import SeriesGeometry, SeriesVolume
from models.input_checks import TRAINING_LIVER_HU_KEY
from testkit.dicom_factory import ct_like_pixels
from workers.serving.input_checks import liver_doubt, volume_doubt


def _volume(hu: np.ndarray, gaps: list[int] | None = None) -> SeriesVolume:
    z, rows, cols = hu.shape
    g = SeriesGeometry(n_slices=z, rows=rows, columns=cols, pixel_spacing_mm=(1.0, 1.0), slice_spacing_mm=2.0,
                       slice_positions_mm=[2.0 * k for k in range(z)], orientation=[1, 0, 0, 0, 1, 0],
                       origin_mm=[0.0, 0.0, 0.0], gaps=gaps or [])  # fmt: skip
    return SeriesVolume(hu=hu.astype(np.float32), geometry=g, sop_instance_uids=[str(k) for k in range(z)])


def _ct(z: int = 12) -> np.ndarray:
    return np.stack([ct_like_pixels(64, 64, k) for k in range(z)]).astype(np.float32) - 1024


def test_volume_doubt_checks_the_geometry_first_then_the_hu() -> None:
    assert volume_doubt(_volume(_ct())) is None
    assert volume_doubt(_volume(_ct(), gaps=[3]))[0] == DecisionReason.SLICE_GAP  # type: ignore[index]
    reason, detail = volume_doubt(_volume(np.clip(_ct() + 1024, 0, 2000)))  # type: ignore[misc]
    assert reason == DecisionReason.NOT_CT_HU and "no air" in detail


def test_a_liver_cut_by_the_field_of_view_follows_the_site_policy() -> None:
    volume, liver = _volume(_ct()), np.zeros((12, 64, 64), bool)
    liver[:, 16:46, 16:46] = True  # 9 cm^2 on every slice: continues past the first and the last
    meta = {TRAINING_LIVER_HU_KEY: [100, 140]}
    reason, detail = liver_doubt(Settings(), volume, liver, meta, series_id=1)  # type: ignore[misc]
    assert reason == DecisionReason.LIVER_CUT_BY_FOV and "most cranial slice (index 11" in detail
    assert "Evidence: liver median" in detail and "outside the training range 100..140 HU" in detail
    assert liver_doubt(Settings(partial_liver_coverage="accept"), volume, liver, meta, series_id=1) is None

"""Inputs the gate cannot judge, in the scoring pipeline: the volume's checks run before any model (beside the
geometry's), the liver's right after the pinned segmenter ran and before any score. The logic and its measured
margins are in ``models.input_checks``; this module turns a doubt into a ``DecisionReason`` and a detail, and
applies the site's policy (``GATEKEEPER_PARTIAL_LIVER_COVERAGE``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from app.core.config import Settings
from app.db.states import DecisionReason
from app.dicom.volume import SeriesVolume, geometry_doubt
from models.body_position import BodyPosition
from models.input_checks import TRAINING_LIVER_HU_KEY, contrast_note, coverage_of, hu_doubt, liver_doubts

log = logging.getLogger(__name__)


def volume_doubt(volume: SeriesVolume) -> tuple[DecisionReason, str] | None:
    """Before any model: the geometry (gaps, duplicate positions, no clear stack), then CT in HU."""
    geometry = geometry_doubt(volume.geometry)
    if geometry is not None:
        return DecisionReason(geometry[0]), geometry[1]
    hu = hu_doubt(volume.hu)
    if hu is not None:
        return DecisionReason(hu.reason), hu.detail
    return None


def _training_range(*metadata: dict[str, Any]) -> list[float] | None:
    for m in metadata:
        found = m.get(TRAINING_LIVER_HU_KEY)
        if found is not None and len(found) == 2:
            return [float(found[0]), float(found[1])]
    return None


def liver_doubt(
    settings: Settings, volume: SeriesVolume, liver: np.ndarray, *metadata: dict[str, Any], series_id: int,
    body: BodyPosition | None = None,
) -> tuple[DecisionReason, str] | None:  # fmt: skip
    """After segmenting: liver where the coverage holds none, too little for it, or cut by the field of view;
    the contrast phase (liver median HU against the training range) is evidence, never a refusal. ``body``: the
    series' body position under the default configuration, if the caller computed it already."""
    g = volume.geometry
    coverage = coverage_of(volume.hu, g.pixel_spacing_mm, g.slice_positions_mm, body=body)
    doubts = liver_doubts(liver, volume.hu, g.pixel_spacing_mm, g.slice_spacing_mm, coverage)
    note = contrast_note(volume.hu, liver, _training_range(*metadata))
    if note is not None:
        log.info("series %d: %s", series_id, note)
    for doubt in doubts:
        if doubt.reason == DecisionReason.LIVER_CUT_BY_FOV and settings.partial_liver_coverage == "accept":
            log.info("series %d: %s (accepted: GATEKEEPER_PARTIAL_LIVER_COVERAGE=accept)", series_id, doubt.detail)
            continue
        return DecisionReason(doubt.reason), doubt.detail + (f". Evidence: {note}" if note else "")
    return None

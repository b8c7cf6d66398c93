"""Auto-segmentation of an in-distribution series: mask, DICOM SEG (stored like any instance) and NIfTI."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pydicom

from app.core.config import Settings
from app.db.tables import ModelVersion
from app.dicom.seg import write_nifti, write_seg
from app.dicom.volume import SeriesVolume
from app.services.derived import write_object
from app.services.routing import Segmentation
from app.services.storage import InstanceStore
from workers.inference.segmenter import segment_volume
from workers.serving.model_cache import load_version

log = logging.getLogger(__name__)


def segment_series(
    settings: Settings, store: InstanceStore, *, row: ModelVersion, volume: SeriesVolume, paths_by_uid: dict[str, Path],
    series_id: int, revision: int, mask: np.ndarray | None = None,
) -> Segmentation:  # fmt: skip
    """``mask``: this segmenter's mask of the series when scoring already computed it (liver-restricted scorer)."""
    if mask is None:
        model, _metadata = load_version(settings.models_dir, row)
        mask = segment_volume(model, volume.hu, volume.geometry)
    nifti = f"derived/{series_id}-r{revision}-m{row.id}.nii.gz"
    (settings.storage_dir / nifti).parent.mkdir(parents=True, exist_ok=True)
    write_nifti(mask, volume.geometry, settings.storage_dir / nifti)
    sources = [pydicom.dcmread(paths_by_uid[uid], stop_before_pixels=True) for uid in volume.sop_instance_uids]
    if any("FrameOfReferenceUID" not in ds for ds in sources):
        # A SEG must reference the frame of reference; we do not invent one for someone else's series.
        return Segmentation(nifti, seg_refused="source series has no FrameOfReferenceUID: NIfTI only")
    seg = write_seg(mask, sources, algorithm_name="gatekeeper-segmenter", algorithm_version=f"v{row.version}",
                    model_sha256=row.sha256)  # fmt: skip
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    relative, sha, size = write_object(store, buf.getvalue())
    return Segmentation(nifti, relative, str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID), str(seg.SOPClassUID),
                     str(seg.file_meta.TransferSyntaxUID), sha, size)  # fmt: skip

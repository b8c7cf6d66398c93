"""Inputs the gate cannot judge reach a radiologist before any score, through the whole stack: STOW-RS over HTTP,
PostgreSQL, Redis and a Celery worker, with a calibrated liver-restricted scorer that would accept anything.
Skipped without ../shared/data (the real series)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from app.client import read_files, stow
from testkit.dicom_factory import SeriesSpec, ct_dataset, to_bytes
from testkit.servers import Stack
from testkit.tiny_models import ALL_AUTO, train_tiny_patch_scorer, with_patch_calibration
from tests.integration.test_loop_e2e import register
from tests.integration.test_patch_scorer_stack import segmenter_with_bias

pytestmark = pytest.mark.integration
DATA = Path(os.environ.get("GATEKEEPER_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))


@pytest.fixture(scope="module")
def data() -> Path:
    if not (DATA / "ct").is_dir():
        pytest.skip(f"real CT data not found at {DATA} (set GATEKEEPER_DATA_DIR to run these tests)")
    return DATA / "ct"


@pytest.fixture(scope="module")
def gate(stack_factory, tmp_path_factory, data) -> Stack:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("input-checks")
    stack = stack_factory(GATEKEEPER_MODELS_DIR=str(tmp / "registry"))
    register(stack, "segmenter", segmenter_with_bias(tmp, "everywhere", 20.0))  # "liver" in the whole body crop
    scorer = with_patch_calibration(train_tiny_patch_scorer(tmp / "patch"), ALL_AUTO, tmp / "auto.pt")
    register(stack, "scorer", scorer)
    return stack


def _uint8_probe(path: Path) -> tuple[str, list[bytes]]:
    """lidc2-uint8-probe (0-255, not HU) written as CT DICOM with RescaleIntercept 0, as a viewer's export would."""
    volume = np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0)  # (Z, Y, X)
    spec = SeriesSpec(n=volume.shape[0], rows=volume.shape[1], cols=volume.shape[2],
                      study_uid=pydicom.uid.generate_uid(), series_uid=pydicom.uid.generate_uid())  # fmt: skip
    blobs = []
    for k, plane in enumerate(volume):
        ds = ct_dataset(spec, k)
        ds.RescaleIntercept, ds.PixelSpacing = 0, [1.406, 1.406]
        ds.PixelData = np.ascontiguousarray(plane).astype(np.int16).tobytes()
        blobs.append(to_bytes(ds))
    return spec.series_uid, blobs


def _revisit(folder: Path) -> tuple[str, list[bytes]]:
    """A real DICOM series under new study, series and SOP UIDs."""
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    blobs = []
    for blob in read_files(folder):
        ds = pydicom.dcmread(io.BytesIO(blob))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, "GK-INPUT-1"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    return series, blobs


def _push_and_check(stack: Stack, series: str, blobs: list[bytes], reason: str, words: str) -> None:
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{series}/complete")
    state = stack.wait_status(series, {"auto", "manual", "failed"}, timeout_s=240)
    assert state["status"] == "manual" and state["attempts"] == 1, state
    assert words in (state["last_error"] or ""), state["last_error"]
    (row,) = stack.rows("SELECT reason, series_score, evidence_path, scorer_version_id FROM series_decisions "
                        "WHERE series_id=:i", i=state["id"])  # fmt: skip
    assert row == (reason, None, None, None)  # decided before any score: no score, no evidence, no scorer
    assert stack.scalar("SELECT reason FROM cases WHERE series_id=:i", i=state["id"]) == reason
    with stack.client("radiologist") as reader:
        case = next(c for c in reader.get("/queue").json() if c["series_uid"] == series)
        detail = reader.get(f"/queue/{case['id']}").json()
        assert case["reason"] == reason and words in detail["evidence"]["detail"]


def test_a_series_that_is_not_ct_in_hu_goes_to_a_radiologist(gate: Stack, data: Path) -> None:
    series, blobs = _uint8_probe(data / "lidc2-uint8-probe" / "LIDC2_uint8.nii.gz")
    _push_and_check(gate, series, blobs, "not_ct_hu", "not CT in Hounsfield units: values 0..255")


def test_a_chest_series_goes_to_a_radiologist_before_any_score(gate: Stack, data: Path) -> None:
    """cptac-c3n-00247-chest as it is (99 slices reaching the liver dome): the segmenter finds "liver" on every
    slice, most of them far above the lung base, where no liver reaches."""
    series, blobs = _revisit(data / "cptac-c3n-00247-chest" / "ct-dicom")
    _push_and_check(gate, series, blobs, "no_liver_expected", "120 mm or more above the lung base")


def test_the_sample_slab_is_cut_by_the_field_of_view(gate: Stack, data: Path) -> None:
    """The committed sample: 20 slices (40 mm) through the liver, which continues past both ends."""
    series, blobs = _revisit(Path(__file__).resolve().parents[2] / "samples" / "totalseg-example" / "ct-dicom")
    _push_and_check(gate, series, blobs, "liver_cut_by_fov", "the field of view cuts through the liver")

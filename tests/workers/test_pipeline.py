"""Completion, dispatch and the scoring task through real PostgreSQL, Redis and Celery workers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from app.client import stow
from app.dicom.seg import write_nifti
from app.dicom.volume import SeriesGeometry
from testkit.dicom_factory import ct_dataset, make_series, to_bytes
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def _audits(stack: Stack, action: str, series_id: int) -> int:
    return int(stack.scalar("SELECT count(*) FROM audit_events WHERE action=:a AND entity_id=:i",  # type: ignore[arg-type]
                            a=action, i=str(series_id)))  # fmt: skip


def test_stable_age_completion_scores_and_records_geometry(stack: Stack, pacs: httpx.Client) -> None:
    spec, blobs = make_series(5, spacing_z=2.5)
    assert stow(pacs, blobs).status_code == 200
    state = stack.wait_status(spec.series_uid, {"manual"}, timeout_s=60)
    g = state["geometry"]
    assert g["n_slices"] == 5 and g["slice_spacing_mm"] == pytest.approx(2.5) and g["gaps"] == []
    assert g["slice_positions_mm"] == sorted(g["slice_positions_mm"])
    assert state["attempts"] == 1 and _audits(stack, "series.claimed", state["id"]) == 1  # each run is on record
    assert stack.scalar("SELECT count(*) FROM outbox WHERE series_id=:i", i=state["id"]) == 1


def test_explicit_completion_and_late_instance_reopens(stack: Stack, pacs: httpx.Client) -> None:
    spec, blobs = make_series(4)
    assert stow(pacs, blobs[:3]).status_code == 200
    r = pacs.post(f"/series/{spec.series_uid}/complete")
    assert r.status_code == 200 and r.json()["status"] in ("queued", "scoring", "manual")
    first = stack.wait_status(spec.series_uid, {"manual"})
    assert first["geometry"]["n_slices"] == 3
    assert pacs.post(f"/series/{spec.series_uid}/complete").status_code == 409
    # A late instance re-opens the series under a new revision, which is scored again.
    assert stow(pacs, blobs[3:]).status_code == 200
    assert pacs.get(f"/series/{spec.series_uid}").json()["revision"] == 1
    second = stack.wait_status(spec.series_uid, {"manual"})
    assert second["revision"] == 1 and second["geometry"]["n_slices"] == 4
    assert _audits(stack, "series.reopened", first["id"]) == 1
    assert stack.scalar("SELECT count(*) FROM outbox WHERE series_id=:i", i=first["id"]) == 2


def test_unknown_series_is_404(pacs: httpx.Client) -> None:
    assert pacs.post("/series/1.2.3.4.404/complete").status_code == 404


def test_duplicate_positions_go_to_a_radiologist_without_retry(stack: Stack, pacs: httpx.Client) -> None:
    """Two images at one position: the gate cannot say which is the series (issue #12, item 10): manual before
    any score, the reason in words, one attempt, and the geometry of what is kept, so it can be contoured."""
    spec, _ = make_series(2)
    same = [to_bytes(ct_dataset(spec, 0)), to_bytes(ct_dataset(spec, 0))]  # two SOPs at one position
    assert stow(pacs, same).status_code == 200
    pacs.post(f"/series/{spec.series_uid}/complete")
    state = stack.wait_status(spec.series_uid, {"manual"})
    assert state["attempts"] == 1 and "share one position" in state["last_error"]
    assert state["geometry"]["n_slices"] == 1 and state["geometry"]["set_aside"] == {"duplicate_position": 1}
    assert stack.scalar("SELECT reason FROM cases WHERE series_id=:i", i=state["id"]) == "duplicate_positions"


def test_a_secondary_image_is_set_aside_not_fatal(stack: Stack, pacs: httpx.Client) -> None:
    """A coronal reformat and a localizer inside an axial series (issue #12, item 10: one coronal image failed
    a whole 52-slice series): both are set aside and the axial stack is routed."""
    spec, blobs = make_series(5)
    coronal = ct_dataset(spec, 9)
    coronal.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    localizer = ct_dataset(spec, 10)
    localizer.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert stow(pacs, [*blobs, to_bytes(coronal), to_bytes(localizer)]).status_code == 200
    pacs.post(f"/series/{spec.series_uid}/complete")
    state = stack.wait_status(spec.series_uid, {"manual", "auto", "failed"})
    assert state["status"] == "manual" and state["attempts"] == 1, state["last_error"]
    assert state["geometry"]["n_slices"] == 5
    assert state["geometry"]["set_aside"] == {"other_orientation_or_size": 1, "localizer": 1}


def test_undecodable_pixels_fail_at_once_into_a_case_that_can_be_contoured(stack: Stack, pacs: httpx.Client) -> None:
    """Pixel data that parses but cannot be decoded fails the same way every time: one attempt, no retry
    (issue #12, item 10: deterministic errors were retried three times), and the manual case carries the
    primary stack's geometry, so a radiologist can contour it (it answered 422 "no recorded geometry")."""
    spec, _ = make_series(2)
    blobs = []
    for i in range(2):
        ds = ct_dataset(spec, i)
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])  # a broken J2K codestream
        blobs.append(to_bytes(ds))
    assert stow(pacs, blobs).status_code == 200
    pacs.post(f"/series/{spec.series_uid}/complete")
    state = stack.wait_status(spec.series_uid, {"failed"}, timeout_s=90)
    assert state["attempts"] == 1 and "not retried" in state["last_error"]
    assert _audits(stack, "series.retry", state["id"]) == 0
    assert stack.scalar("SELECT reason FROM cases WHERE series_id=:i", i=state["id"]) == "failed"  # to a radiologist
    g = state["geometry"]
    assert g is not None and (g["n_slices"], g["rows"], g["columns"]) == (2, spec.rows, spec.cols)
    case_id = stack.scalar("SELECT id FROM cases WHERE series_id=:i", i=state["id"])
    with stack.client("radiologist") as reader, tempfile.TemporaryDirectory() as tmp:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        geometry = SeriesGeometry(**{**g, "pixel_spacing_mm": tuple(g["pixel_spacing_mm"])})
        write_nifti(np.zeros((2, spec.rows, spec.cols), np.uint8), geometry, Path(tmp) / "c.nii.gz")
        r = reader.post(f"/queue/{case_id}/contour", content=(Path(tmp) / "c.nii.gz").read_bytes(),
                        headers={"Content-Type": "application/gzip"})  # fmt: skip
        assert r.status_code == 200, r.text


def test_lost_task_is_resent_by_the_reconciler(stack_factory) -> None:  # type: ignore[no-untyped-def]
    lone = stack_factory(worker=False)
    spec, blobs = make_series(3)
    with lone.client() as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{spec.series_uid}/complete")
    lone.wait_published()
    broker = redis.Redis.from_url(lone.service.env["GATEKEEPER_BROKER_URL"])
    assert broker.llen("scoring") == 1
    broker.delete("scoring")  # the message is lost in the broker
    lone.service.start_worker()
    state = lone.wait_status(spec.series_uid, {"manual"}, timeout_s=60)
    assert _audits(lone, "job.resent", state["id"]) >= 1
    assert lone.scalar("SELECT publish_count FROM outbox WHERE series_id=:i", i=state["id"]) >= 2

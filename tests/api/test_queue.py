"""The manual queue over HTTP: ordering, leases, a second reader, contour validation, re-opened series.

Every test runs on PostgreSQL and on the embedded SQLite default that `make run` uses.
"""

from __future__ import annotations

import gzip
import io
import threading
import time

import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest
from sqlalchemy import create_engine, text

from app.client import stow
from app.dicom.seg import write_seg
from testkit.dicom_factory import SeriesSpec, ct_dataset, make_series, to_bytes
from tests.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def q(stack_factory, request) -> Stack:  # type: ignore[no-untyped-def]
    """No scorer is promoted here, so every series lands in the manual queue."""
    return stack_factory(database=request.param, GATEKEEPER_CLAIM_LEASE_S="2")


def _manual_case(stack: Stack, n: int = 4) -> tuple[str, int]:
    _, series_uid, case_id = _manual_case_of(stack, *make_series(n))
    return series_uid, case_id


def _manual_case_of(stack: Stack, spec: SeriesSpec, blobs: list[bytes]) -> tuple[SeriesSpec, str, int]:
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{spec.series_uid}/complete")
    state = stack.wait_status(spec.series_uid, {"manual"})
    case_id = stack.scalar("SELECT id FROM cases WHERE series_id=:i", i=state["id"])
    return spec, spec.series_uid, int(case_id)  # type: ignore[arg-type]


def _nifti(shape: tuple[int, int, int], affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(np.ones(shape, np.uint8), affine)
    return gzip.compress(img.to_bytes())


def test_lease_expires_and_another_reader_takes_over(q: Stack) -> None:
    _, case_id = _manual_case(q)
    with q.client("radiologist") as first, q.client("admin") as second:
        assert first.post(f"/queue/{case_id}/claim").status_code == 200
        assert second.post(f"/queue/{case_id}/claim").status_code == 409
        assert case_id not in [c["id"] for c in second.get("/queue").json()]  # hidden while held
        deadline = time.monotonic() + 15
        while second.post(f"/queue/{case_id}/claim").status_code != 200:
            assert time.monotonic() < deadline, "the lease never lapsed"
            time.sleep(0.2)
        # the first reader's lease lapsed: they can no longer close the case
        assert first.post(f"/queue/{case_id}/reject", json={"reason": "too late"}).status_code == 409
        assert second.post(f"/queue/{case_id}/release").status_code == 200


def test_queue_positions_follow_priority_then_age(q: Stack) -> None:
    _manual_case(q)
    _manual_case(q)
    with q.client("radiologist") as reader:
        items = [c for c in reader.get("/queue").json() if c["status"] == "open"]
    positions = [c["position"] for c in items]
    assert positions == sorted(positions) and positions[0] == 1


def test_contour_on_the_wrong_grid_is_refused_precisely(q: Stack) -> None:
    series_uid, case_id = _manual_case(q, n=4)
    with q.client("radiologist") as reader:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        affine = np.diag([-0.8, -0.8, 2.5, 1.0])
        wrong = reader.post(f"/queue/{case_id}/contour", content=_nifti((32, 32, 5), affine),
                            headers={"Content-Type": "application/gzip"})  # fmt: skip
        assert wrong.status_code == 422
        assert "differs from the series" in wrong.json()["detail"], wrong.text
        junk = reader.post(f"/queue/{case_id}/contour", content=b"not a mask",
                           headers={"Content-Type": "application/dicom"})  # fmt: skip
        assert junk.status_code == 422
        media = reader.post(f"/queue/{case_id}/contour", content=b"x", headers={"Content-Type": "text/plain"})
        assert media.status_code == 422 and "media type" in media.json()["detail"]
        assert q.scalar("SELECT status FROM cases WHERE id=:i", i=case_id) == "claimed"  # nothing changed


def test_a_contour_on_a_same_shape_but_shifted_grid_is_refused(q: Stack) -> None:
    """Same rows, columns and slices, origin moved: a mask of another grid (or off by one slice) is a 422
    through HTTP and stores nothing; the right grid is then accepted."""
    _, case_id = _manual_case(q, n=4)
    shifts_mm = {"4 mm along x": (4.0, 0, 0), "half a pixel along y": (0, 0.4, 0), "one slice": (0, 0, 2.5)}
    with q.client("radiologist") as reader:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        for what, shift in shifts_mm.items():
            affine = GRID_AFFINE.copy()
            affine[:3, 3] += shift
            r = reader.post(f"/queue/{case_id}/contour", content=_nifti((32, 32, 4), affine),
                            headers={"Content-Type": "application/gzip"})  # fmt: skip
            assert r.status_code == 422, (what, r.status_code, r.text)
            assert "mm from the series' voxel" in r.json()["detail"], (what, r.text)
            assert q.rows("SELECT status, contour_path FROM cases WHERE id=:i", i=case_id) == [("claimed", None)]
        right = reader.post(f"/queue/{case_id}/contour", content=_nifti((32, 32, 4), GRID_AFFINE),
                            headers={"Content-Type": "application/gzip"})  # fmt: skip
        assert right.status_code == 200, right.text


def test_reject_needs_a_reason_and_closes_the_case(q: Stack) -> None:
    _, case_id = _manual_case(q)
    with q.client("radiologist") as reader:
        reader.post(f"/queue/{case_id}/claim")
        assert reader.post(f"/queue/{case_id}/reject", json={}).status_code == 422
        assert reader.post(f"/queue/{case_id}/reject", json={"reason": "normal; no lesion"}).status_code == 200
        assert reader.get(f"/queue/{case_id}").status_code == 404  # no longer in anyone's queue
    assert q.scalar("SELECT count(*) FROM audit_events WHERE action='case.rejected' AND entity_id=:i",
                    i=str(case_id)) == 1  # fmt: skip


def test_claim_next_takes_the_top_case(q: Stack) -> None:
    _manual_case(q)
    with q.client("radiologist") as reader:
        top = reader.get("/queue").json()[0]
        got = reader.post("/queue/next")
        assert got.status_code == 200 and got.json()["claimed_by_me"]
        assert got.json()["id"] == top["id"]
        reader.post(f"/queue/{top['id']}/release")


def test_claim_and_submit_on_either_database(q: Stack) -> None:
    """The loop's reader side on both databases (on SQLite the lease check compared naive with aware times)."""
    _, case_id = _manual_case(q)
    with q.client("radiologist") as reader:
        assert reader.get("/queue").status_code == 200
        got = reader.post("/queue/next")
        assert got.status_code == 200, got.text
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        mine = next(c for c in reader.get("/queue").json() if c["id"] == case_id)
        assert mine["claimed_by_me"] and mine["position"] is None
        r = reader.post(f"/queue/{case_id}/contour", content=_nifti((32, 32, 4), GRID_AFFINE),
                        headers={"Content-Type": "application/gzip"})  # fmt: skip
        assert r.status_code == 200, r.text
    assert q.scalar("SELECT status FROM cases WHERE id=:i", i=case_id) == "submitted"


# the RAS affine of make_series' grid: 0.8 mm pixels, slices 2.5 mm apart from z = -7.5 (LPS) upwards
GRID_AFFINE = np.array([[-0.8, 0, 0, 0], [0, -0.8, 0, 0], [0, 0, 2.5, -7.5], [0, 0, 0, 1.0]])


def _seg_of(spec: SeriesSpec, blobs: list[bytes], mask: np.ndarray) -> bytes:
    """A DICOM SEG of ``mask`` (Z ascending, as the series' grid) over the pushed instances."""
    datasets = [pydicom.dcmread(io.BytesIO(b)) for b in blobs][::-1]  # make_series' positions descend
    seg = write_seg(mask, datasets, algorithm_name="reader", algorithm_version="1", model_sha256="0" * 64)
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_a_late_contour_never_replaces_the_one_the_case_names(q: Stack) -> None:
    """Reader A's submit passes the lease check and is held (PostgreSQL: the test locks the instances table,
    which a SEG's validation reads); A's lease lapses, B claims and submits; then A's request goes on. A gets
    409 and the stored contour is B's, the one the case names."""
    if q.database_url.startswith("sqlite"):
        pytest.skip("holding a request between its lease check and its write needs PostgreSQL's table lock")
    spec, blobs = make_series(4)
    _, _, case_id = _manual_case_of(q, spec, blobs)
    mask_a = np.zeros((4, 32, 32), np.uint8)
    mask_a[0, :8, :8] = 1
    seg_a = _seg_of(spec, blobs, mask_a)
    engine = create_engine(q.database_url)
    a_reply: list[httpx.Response] = []
    with q.client("radiologist") as a, q.client("admin") as b, engine.connect() as lock:
        assert a.post(f"/queue/{case_id}/claim").status_code == 200
        tx = lock.begin()
        lock.execute(text("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE"))
        thread = threading.Thread(
            target=lambda: a_reply.append(
                a.post(f"/queue/{case_id}/contour", content=seg_a, headers={"Content-Type": "application/dicom"})
            )
        )
        thread.start()
        deadline = time.monotonic() + 15
        while not q.scalar("SELECT count(*) FROM pg_locks WHERE relation = 'instances'::regclass AND NOT granted"):
            assert time.monotonic() < deadline and thread.is_alive(), "A's submit never reached the instances"
            time.sleep(0.05)
        while b.post(f"/queue/{case_id}/claim").status_code != 200:  # A's lease lapses (2 s)
            assert time.monotonic() < deadline, "A's lease never lapsed"
            time.sleep(0.2)
        r = b.post(f"/queue/{case_id}/contour", content=_nifti((32, 32, 4), GRID_AFFINE),
                   headers={"Content-Type": "application/gzip"})  # fmt: skip
        assert r.status_code == 200, r.text
        tx.rollback()  # A's request goes on
        thread.join(30)
    engine.dispose()
    assert a_reply and a_reply[0].status_code == 409, a_reply and a_reply[0].text
    status, path = q.rows("SELECT status, contour_path FROM cases WHERE id=:i", i=case_id)[0]
    assert status == "submitted"
    stored = np.asarray(nib.load(q.storage / path).dataobj)
    assert stored.sum() == 32 * 32 * 4, "the stored contour is not B's"
    assert len(list((q.storage / "labels").glob(f"case-{case_id}-*"))) == 1  # A's file is not left behind


def test_a_reopened_series_supersedes_its_old_case(q: Stack) -> None:
    """A late instance re-opens a series: the old revision's case closes (superseded, with a reason) and the
    new revision's case shows only its own evidence (here none: the late slice breaks the grid, so it fails)."""
    spec, blobs = make_series(4)
    _, _, old = _manual_case_of(q, spec, blobs)
    late = to_bytes(ct_dataset(spec, 1))  # a new SOP instance on slice 1's position
    with q.client("pacs") as c:
        assert stow(c, [late]).status_code == 200
    status, reason, revision = q.rows("SELECT status, reject_reason, revision FROM cases WHERE id=:i", i=old)[0]
    assert status == "superseded" and f"superseded by revision {revision + 1} " in reason, reason
    with q.client("radiologist") as reader:
        assert old not in [c["id"] for c in reader.get("/queue").json()]
        assert reader.post(f"/queue/{old}/claim").status_code == 409
        with q.client("pacs") as c:
            c.post(f"/series/{spec.series_uid}/complete")
        # the late instance sits on an existing slice position: the new revision cannot be judged (item 10)
        q.wait_status(spec.series_uid, {"manual"})
        new = q.scalar("SELECT id FROM cases WHERE id <> :i AND series_id = (SELECT series_id FROM cases "
                       "WHERE id=:i)", i=old)  # fmt: skip
        assert new is not None
        assert [c["id"] for c in reader.get("/queue").json() if c["series_uid"] == spec.series_uid] == [new]
        detail = reader.get(f"/queue/{new}").json()
        assert detail["reason"] == "duplicate_positions"
        # revision 1's own evidence (no score: it was never scored), not revision 0's
        assert detail["evidence"]["reason"] == "duplicate_positions" and detail["evidence_png"] is None
    assert q.scalar("SELECT count(*) FROM audit_events WHERE action='case.superseded' AND entity_id=:i",
                    i=str(old)) == 1  # fmt: skip

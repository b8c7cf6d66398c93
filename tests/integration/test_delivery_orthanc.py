"""Results back to a real PACS: Orthanc with Basic auth (its DICOMweb plugin's STOW-RS) receives the SEG of an
auto-segmented series and, as a SEG, a radiologist's accepted contour; on PostgreSQL and on SQLite.

The Orthanc is down when the first SEG is produced: the delivery waits and retries on its schedule, and
succeeds once Orthanc comes up; nothing is marked delivered before Orthanc has stored the instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.client import stow
from testkit.orthanc import OrthancUnavailable, PrivateOrthanc
from testkit.servers import register_model
from testkit.tiny_models import (
    ALL_AUTO,
    ALL_MANUAL,
    SAMPLE_DIR,
    SAMPLE_MASK,
    sample_visit,
    train_tiny_scorer,
    train_tiny_segmenter,
    with_series_threshold,
)
from tests.conftest import Stack

pytestmark = pytest.mark.integration
USER, PASSWORD = "gatekeeper", "a-long-random-password"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tiny")
    scorer = train_tiny_scorer(tmp / "scorer")
    return {
        "auto": with_series_threshold(scorer, ALL_AUTO, tmp / "auto.pt"),
        "manual": with_series_threshold(scorer, ALL_MANUAL, tmp / "manual.pt"),
        "segmenter": train_tiny_segmenter(tmp / "segmenter"),
    }


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def pacs_and_stack(  # type: ignore[no-untyped-def]
    request, stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory, tiny: dict[str, Path]
) -> Iterator[tuple[PrivateOrthanc, Stack]]:
    try:
        orthanc = PrivateOrthanc(tmp_path_factory.mktemp("orthanc"), {USER: PASSWORD})
    except OrthancUnavailable as exc:
        pytest.skip(str(exc))
    # not started: the PACS is down when the service first tries to deliver
    stack = stack_factory(database=request.param, GATEKEEPER_MODELS_DIR=str(tmp_path_factory.mktemp("registry")),
                          GATEKEEPER_SEG_DESTINATION_URL=orthanc.dicomweb_url,
                          GATEKEEPER_SEG_DESTINATION_USERNAME=USER, GATEKEEPER_SEG_DESTINATION_PASSWORD=PASSWORD,
                          GATEKEEPER_DELIVERY_BACKOFF_S="1", GATEKEEPER_DELIVERY_BACKOFF_MAX_S="2",
                          GATEKEEPER_DELIVERY_MAX_ATTEMPTS="50")  # fmt: skip
    register_model(stack.service.env, "segmenter", tiny["segmenter"])
    yield orthanc, stack
    orthanc.remove()


def push(stack: Stack, statuses: set[str]) -> tuple[str, str, dict]:
    study, series, blobs = sample_visit("GK-DELIVERY-1")
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{series}/complete")
    return study, series, stack.wait_status(series, statuses, timeout_s=120)


def wait_delivery(admin: httpx.Client, series_uid: str, kind: str, done: Callable[[dict], bool],
                  timeout_s: float = 90) -> dict:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    row: dict = {}
    while time.monotonic() < deadline:
        rows = [d for d in admin.get("/admin/deliveries").json()["deliveries"]
                if d["series_uid"] == series_uid and d["kind"] == kind]  # fmt: skip
        if rows and done(row := rows[0]):
            return row
        time.sleep(0.3)
    raise AssertionError(f"delivery not as expected after {timeout_s} s: {row}")


def orthanc_instance(orthanc: PrivateOrthanc, sop_uid: str) -> dict:
    """The instance's tags as Orthanc stored them (its own REST API, with the same Basic auth)."""
    with orthanc.client() as o:
        found = [r for r in o.post("/tools/lookup", content=sop_uid).json() if r["Type"] == "Instance"]
        assert len(found) == 1, found
        return o.get(f"/instances/{found[0]['ID']}/tags", params={"simplify": ""}).json()


def test_auto_seg_waits_for_a_pacs_that_is_down_then_arrives(pacs_and_stack, tiny) -> None:  # type: ignore[no-untyped-def]
    orthanc, stack = pacs_and_stack
    register_model(stack.service.env, "scorer", tiny["auto"])
    _, series, state = push(stack, {"auto"})
    seg_sop = stack.scalar("SELECT seg_sop_uid FROM segmentations WHERE series_id=:i", i=state["id"])
    with stack.client("admin") as admin:
        waiting = wait_delivery(admin, series, "auto_seg", lambda d: d["attempts"] >= 2)
        assert waiting["status"] in ("pending", "sending") and waiting["delivered_at"] is None
        assert "ConnectError" in (waiting["last_error"] or ""), waiting
        assert stack.scalar("SELECT count(*) FROM deliveries WHERE status='delivered'") == 0

        orthanc.start()  # the PACS comes up
        assert httpx.get(f"{orthanc.url}/system").status_code == 401  # Basic auth is enforced
        done = wait_delivery(admin, series, "auto_seg", lambda d: d["status"] == "delivered")
        assert done["last_http_status"] == 200 and done["last_error"] is None and done["attempts"] >= 3
        assert admin.get(f"/admin/deliveries/{done['id']}").json()["status"] == "delivered"
        assert admin.get("/admin/deliveries", params={"status": "delivered"}).json()["counts"]["delivered"] >= 1
        assert admin.get("/admin/deliveries", params={"status": "lost"}).status_code == 422
        assert admin.post(f"/admin/deliveries/{done['id']}/retry").status_code == 409  # only a failed one
    tags = orthanc_instance(orthanc, str(seg_sop))
    assert tags["Modality"] == "SEG"
    assert tags["ReferencedSeriesSequence"][0]["SeriesInstanceUID"] == series
    assert tags["SegmentSequence"][0]["SegmentAlgorithmType"] == "AUTOMATIC"


def test_an_accepted_contour_reaches_the_pacs_as_a_seg(pacs_and_stack, tiny) -> None:  # type: ignore[no-untyped-def]
    orthanc, stack = pacs_and_stack
    if orthanc.proc is None:
        orthanc.start()
    register_model(stack.service.env, "scorer", tiny["manual"])
    study, series, _ = push(stack, {"manual"})
    with stack.client("radiologist") as reader:
        case = next(c for c in reader.get("/queue").json() if c["series_uid"] == series)
        assert reader.post(f"/queue/{case['id']}/claim").status_code == 200
        mask = (SAMPLE_DIR / SAMPLE_MASK).read_bytes()
        r = reader.post(f"/queue/{case['id']}/contour", content=mask, headers={"Content-Type": "application/gzip"})
        assert r.status_code == 200, r.text
    with stack.client("admin") as admin:
        done = wait_delivery(admin, series, "contour_seg", lambda d: d["status"] in ("delivered", "failed"))
    assert done["status"] == "delivered", done
    assert done["case_id"] == case["id"]
    seg_sop = stack.scalar("SELECT seg_sop_uid FROM deliveries WHERE id=:i", i=done["id"])
    tags = orthanc_instance(orthanc, str(seg_sop))
    assert tags["Modality"] == "SEG" and tags["StudyInstanceUID"] == study
    assert tags["ReferencedSeriesSequence"][0]["SeriesInstanceUID"] == series
    assert tags["SegmentSequence"][0]["SegmentAlgorithmType"] == "MANUAL"
    # the contour's SEG is served by this service too, like the auto-segmentation's
    with stack.client("pacs") as c:
        found = c.get(f"/dicomweb/studies/{study}/instances", params={"SOPInstanceUID": seg_sop})
        assert found.status_code == 200 and len(found.json()) == 1

"""The OHIF viewer in a real browser (Debian's chromium, driven by playwright) on the service's own DICOMweb:
it opens the Apache-2.0 sample study, asks the service for the series' metadata and its pixel frames, draws
the CT on a canvas, and sends no request anywhere but the service."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.client import stow
from app.db.tables import Series
from app.dicom.seg import read_nifti_mask, write_seg
from app.dicom.volume import order_and_check
from app.services.derived import add_derived_instance, write_object
from app.services.storage import InstanceStore
from testkit.pages import login
from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
OHIF_DIR = ROOT / "var" / "ohif"
SAMPLE = ROOT / "samples" / "totalseg-example" / "ct-dicom"


def _skip_without_browser_or_viewer() -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install -y chromium)")
    if not (OHIF_DIR / "dist" / "index.html").exists():
        pytest.skip(f"the OHIF dist is not installed in {OHIF_DIR} (bash scripts/install-ohif.sh)")


def _contour_seg(blobs: list[bytes], manual: bool = True) -> bytes:
    """The sample's liver (masks/, on the series' grid) as a SEG over the series (a radiologist's or, with
    manual=False, the segmenter's)."""
    headers = [pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True) for b in blobs]
    order, geometry = order_and_check(headers)
    mask = read_nifti_mask(SAMPLE.parent / "masks" / "liver-on-ct-dicom.nii.gz", geometry, label="liver")
    seg = write_seg(mask, [headers[i] for i in order], algorithm_name="gatekeeper-segmenter", algorithm_version="v1",
                    model_sha256="0" * 64, manual=manual)  # fmt: skip
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def viewer(stack_factory) -> tuple[Stack, str, str, str]:  # type: ignore[no-untyped-def]
    """The sample in the manual queue (no scorer here), its case claimed and contoured by STOW of a SEG."""
    _skip_without_browser_or_viewer()
    stack = stack_factory(GATEKEEPER_OHIF_DIR=str(OHIF_DIR))
    blobs = [p.read_bytes() for p in sorted(SAMPLE.iterdir())]
    header = pydicom.dcmread(io.BytesIO(blobs[0]), stop_before_pixels=True)
    study_uid, series_uid = str(header.StudyInstanceUID), str(header.SeriesInstanceUID)
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{series_uid}/complete")
    state = stack.wait_status(series_uid, {"manual"})
    case_id = stack.scalar("SELECT id FROM cases WHERE series_id=:i", i=state["id"])
    with stack.client("radiologist") as reader:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        seg = _contour_seg(blobs)
        r = stow(reader, [seg])
        assert r.status_code == 200, r.text
    seg_series = str(pydicom.dcmread(io.BytesIO(seg), stop_before_pixels=True).SeriesInstanceUID)
    return stack, study_uid, series_uid, seg_series


def _drawn(png: bytes) -> float:
    """The spread of grey levels in a screenshot of the viewport: a blank or flat canvas has none."""
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    return float(grey.std())


class Browser:
    """Chromium on one page, every request outside 127.0.0.1 aborted and noted, every response noted."""

    ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # WebGL without a GPU

    def __init__(self, playwright, token: str | None) -> None:  # type: ignore[no-untyped-def]
        self.browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=self.ARGS)
        # a bearer token, as an OHIF configured with requestOptions would send; None: the page logs in at
        # /ui/login first and the session's cookie (and, for the STOW, its CSRF token) authenticates OHIF
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        context = self.browser.new_context(viewport={"width": 1280, "height": 800}, extra_http_headers=headers)
        self.outside: list[str] = []
        self.answered: list[tuple[str, int]] = []
        context.route("**/*", self._guard)
        self.page = context.new_page()
        # POSTs apart: OHIF's QIDO searches (GET /dicomweb/studies?...) share the STOW's path
        self.posted: list[tuple[str, int]] = []
        self.page.on("response", self._note)

    def _note(self, response) -> None:  # type: ignore[no-untyped-def]
        answer = (urlsplit(response.url).path, response.status)
        self.answered.append(answer)
        if response.request.method == "POST":
            self.posted.append(answer)

    def _guard(self, route) -> None:  # type: ignore[no-untyped-def]
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def ok(self, prefix: str, part: str = "") -> list[str]:
        return [path for path, status in self.answered if path.startswith(prefix) and part in path and status == 200]

    def wait_drawn(self, frames_prefix: str, timeout_s: float = 120) -> float:
        """Until a frame came back and the viewport canvas shows an image; its grey-level spread."""
        deadline, drawn = time.monotonic() + timeout_s, 0.0
        while time.monotonic() < deadline:
            canvas = self.page.locator("canvas.cornerstone-canvas")
            if self.ok(frames_prefix, "/frames/") and canvas.count():
                drawn = _drawn(canvas.first.screenshot())
                if drawn > 5:
                    break
            self.page.wait_for_timeout(500)
        return drawn

    def open_seg(self, seg_prefix: str, timeout_s: float = 60) -> int:
        """Double-click the SEG in the study browser; how many SEG series it lists."""
        tour = self.page.get_by_text("Skip all")  # OHIF's first-visit tour covers the page
        if tour.count():
            tour.first.click()
        segs = self.page.get_by_text("SEG", exact=True)
        listed = segs.count()
        if listed:
            segs.first.dblclick()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not self.ok(seg_prefix, "/instances/"):
                self.page.wait_for_timeout(500)
            self.page.wait_for_timeout(3000)  # the overlay is drawn after the SEG arrives
        return listed


def test_ohif_draws_the_sample_from_the_service_and_nothing_leaves_the_machine(viewer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    stack, study_uid, series_uid, seg_series = viewer
    series = f"/dicomweb/studies/{study_uid}/series/{series_uid}"
    with sync_playwright() as p:
        b = Browser(p, stack.tokens["radiologist"])
        try:
            b.page.goto(
                f"{stack.service.url}/viewer/viewer?StudyInstanceUIDs={study_uid}", wait_until="domcontentloaded"
            )
            drawn = b.wait_drawn(f"{series}/instances/")
            b.page.screenshot(path=str(tmp_path / "viewer-ct.png"))
            # the contour stored by STOW is listed in the study (QIDO) and loads over the CT (WADO-RS)
            listed = b.open_seg(f"/dicomweb/studies/{study_uid}/series/{seg_series}/")
            b.page.screenshot(path=str(tmp_path / "viewer-seg.png"))
        finally:
            b.browser.close()
    for name in ("viewer-ct.png", "viewer-seg.png"):  # kept beside the API's log (docs/ has copies)
        shutil.copy(tmp_path / name, stack.service.log_dir / name)
    assert (f"{series}/metadata", 200) in b.answered, f"no series metadata answered: {sorted(set(b.answered))[:20]}"
    assert b.ok(f"{series}/instances/", "/frames/"), "the viewer fetched no pixel frame from the service"
    assert drawn > 5, f"the viewport canvas is blank (grey-level spread {drawn:.1f}); see {tmp_path}"
    assert listed, "the contour SEG is not listed in the viewer's study browser"
    assert b.ok(f"/dicomweb/studies/{study_uid}/series/{seg_series}/", "/instances/"), "the SEG was never retrieved"
    assert not b.outside, f"requests left 127.0.0.1: {b.outside[:5]}"
    failed = [(path, status) for path, status in b.answered if status >= 400]
    assert not failed, f"requests the service refused: {failed[:10]}"


AUTOMATIC = {"vr": "LO", "Value": ["automatic liver"]}  # the SEG's SeriesDescription in QIDO


def _with_automatic_seg(stack: Stack, blobs: list[bytes], series_id: int) -> None:
    """The sample's liver as the segmenter's SEG in the study, stored the way routing.record_auto stores one
    (a derived instance): what a radiologist starts a correction from."""
    blob = _contour_seg(blobs, manual=False)
    seg = pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True)
    rel, sha, size = write_object(InstanceStore(stack.storage, fsync=False), blob)
    with Session(stack.engine) as session:
        study_id = session.scalar(select(Series.study_id).where(Series.id == series_id))
        add_derived_instance(session, study_id=int(study_id or 0), series_uid=str(seg.SeriesInstanceUID),
                             sop_uid=str(seg.SOPInstanceUID), sop_class_uid=str(seg.SOPClassUID), modality="SEG",
                             relative=rel, sha256=sha, size=size, attributes={"0008103E": AUTOMATIC},
                             transfer_syntax_uid=str(seg.file_meta.TransferSyntaxUID))  # fmt: skip
        session.commit()


def _erase_and_store(b: Browser) -> None:
    """Load the SEG, erase a stroke through the liver, store it by the segmentation panel's Export -> DICOM SEG.
    Coordinates are those of OHIF 3.13.2's segmentation mode at 1280 x 800."""
    page = b.page
    page.get_by_text("SEG", exact=True).first.dblclick()
    page.get_by_role("button", name="Yes").first.click(timeout=60_000)  # "open this Segmentation?"
    page.wait_for_timeout(5000)
    page.mouse.click(1095, 147)  # the eraser
    page.wait_for_timeout(1000)
    page.mouse.move(480, 440)
    page.mouse.down()
    for x in range(480, 600, 10):
        page.mouse.move(x, 440)
    page.mouse.up()
    page.wait_for_timeout(2000)
    page.mouse.click(1018, 392)  # the segmentation's menu
    page.get_by_text("Export", exact=True).first.hover(timeout=30_000)
    page.get_by_text("DICOM SEG", exact=True).first.click(timeout=30_000)
    page.get_by_role("button", name="Save").first.click(timeout=30_000)  # "Store Segmentation", data source
    deadline = time.monotonic() + 90  # until the STOW is answered: closing the browser earlier would cancel it
    while time.monotonic() < deadline and not any(p == "/dicomweb/studies" for p, _ in b.posted):
        page.wait_for_timeout(500)


def test_a_contour_corrected_in_ohif_and_stored_from_it_is_the_case_contour(stack_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The round trip of issue #16: a manual case, the automatic SEG in its study, the radiologist erases part of
    it in OHIF's segmentation mode and stores it from the viewer; the case is submitted with that contour."""
    from playwright.sync_api import sync_playwright

    _skip_without_browser_or_viewer()
    stack = stack_factory(GATEKEEPER_OHIF_DIR=str(OHIF_DIR))
    blobs = [p.read_bytes() for p in sorted(SAMPLE.iterdir())]
    header = pydicom.dcmread(io.BytesIO(blobs[0]), stop_before_pixels=True)
    study_uid, series_uid = str(header.StudyInstanceUID), str(header.SeriesInstanceUID)
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{series_uid}/complete")
    state = stack.wait_status(series_uid, {"manual"})
    case_id = stack.scalar("SELECT id FROM cases WHERE series_id=:i", i=state["id"])
    _with_automatic_seg(stack, blobs, state["id"])
    with stack.client("radiologist") as reader:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
    with sync_playwright() as p:
        b = Browser(p, None)  # the radiologist's browser session, as in the pages: no bearer token
        try:
            login(b.page, stack.service.url, stack.tokens["radiologist"])
            b.page.goto(f"{stack.service.url}/viewer/segmentation?StudyInstanceUIDs={study_uid}")
            assert b.wait_drawn(f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/") > 5
            tour = b.page.get_by_text("Skip all")
            if tour.count():
                tour.first.click()
            _erase_and_store(b)
            b.page.screenshot(path=str(tmp_path / "viewer-stored.png"))
        finally:
            b.browser.close()
    assert ("/dicomweb/studies", 200) in b.posted, f"the viewer's STOW: {b.posted}"
    status, contour = stack.rows("SELECT status, contour_path FROM cases WHERE id=:i", i=case_id)[0]
    assert status == "submitted"
    stored = int(np.asarray(nib.load(stack.storage / contour).dataobj).sum())
    assert 0 < stored < 366708, stored  # the sample's liver has 366708 voxels: the stroke removed some
    assert not b.outside, f"requests left 127.0.0.1: {b.outside[:5]}"

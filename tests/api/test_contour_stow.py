"""A radiologist's contour stored by STOW-RS (what OHIF's segmentation export sends), over real HTTP: taken as
the held case's contour like an upload, shown by QIDO/WADO in its study, and each refusal precise."""

from __future__ import annotations

import io

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import RLELossless, generate_uid

from app.client import stow
from app.dicom.seg import _prepared_sources, write_seg
from testkit.dicom_factory import make_series
from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.integration
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def q(stack_factory) -> Stack:  # type: ignore[no-untyped-def]
    """No scorer is promoted here, so every series lands in the manual queue; a destination (that refuses
    connections) so that accepted contours get a delivery row."""
    return stack_factory(GATEKEEPER_SEG_DESTINATION_URL="http://127.0.0.1:9/dicom-web")


def manual_case(stack: Stack, n: int = 4) -> tuple[list[Dataset], int]:
    spec, blobs = make_series(n)
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{spec.series_uid}/complete")
    state = stack.wait_status(spec.series_uid, {"manual"})
    case_id = int(stack.scalar("SELECT id FROM cases WHERE series_id=:i", i=state["id"]))  # type: ignore[arg-type]
    return [pydicom.dcmread(io.BytesIO(b)) for b in blobs], case_id


def box(datasets: list[Dataset]) -> np.ndarray:
    mask = np.zeros((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)), np.uint8)
    mask[:, 8:20, 8:20] = 1
    return mask


def seg_blob(datasets: list[Dataset], mask: np.ndarray | None = None, manual: bool = True) -> Dataset:
    mask = box(datasets) if mask is None else mask
    return write_seg(mask, datasets, algorithm_name="gatekeeper-segmenter", algorithm_version="v1",
                     model_sha256="0" * 64, manual=manual)  # fmt: skip


def to_blob(seg: Dataset) -> bytes:
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def refused(r, reason: int, comment: str) -> None:  # type: ignore[no-untyped-def]
    [item] = r.json()["00081198"]["Value"]
    assert item["00081197"]["Value"] == [reason], r.text
    assert item["00000902"]["Value"][0] == comment, r.text


def unchanged(stack: Stack, case_id: int, seg: Dataset, status: str = "claimed") -> None:
    assert stack.rows("SELECT status, contour_path FROM cases WHERE id=:i", i=case_id) == [(status, None)]
    assert stack.scalar("SELECT count(*) FROM instances WHERE sop_instance_uid=:u", u=str(seg.SOPInstanceUID)) == 0


def test_a_seg_of_the_held_case_is_its_contour_and_is_served_in_its_study(q: Stack) -> None:
    datasets, case_id = manual_case(q)
    seg = seg_blob(datasets)
    blob = to_blob(seg)
    study, seg_series = str(datasets[0].StudyInstanceUID), str(seg.SeriesInstanceUID)
    with q.client("radiologist") as reader:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        r = stow(reader, [blob], study_uid=study)
        assert r.status_code == 200, r.text
        assert r.json()["00081199"]["Value"][0]["00081155"]["Value"] == [str(seg.SOPInstanceUID)]
        status, contour = q.rows("SELECT status, contour_path FROM cases WHERE id=:i", i=case_id)[0]
        assert status == "submitted"
        stored = np.asarray(nib.load(q.storage / contour).dataobj)
        assert int(stored.sum()) == int(box(datasets).sum())  # the SEG's voxels, now the case's mask
        # the PACS is sent this very SEG (its stored file), not one rewritten from the mask
        path = q.scalar("SELECT storage_path FROM instances WHERE sop_instance_uid=:u", u=str(seg.SOPInstanceUID))
        assert (q.storage / str(path)).read_bytes() == blob
        deliveries = q.rows("SELECT seg_path, seg_sop_uid FROM deliveries WHERE case_id=:i", i=case_id)
        assert deliveries == [(path, str(seg.SOPInstanceUID))]
        # QIDO finds it in its study (so the viewer lists it over the CT); WADO returns the very bytes sent
        series = reader.get(f"/dicomweb/studies/{study}/series", params={"Modality": "SEG"}).json()
        assert [s["0020000E"]["Value"][0] for s in series] == [seg_series]
        assert series[0]["0008103E"]["Value"] == ["radiologist liver contour"]
        studies = reader.get("/dicomweb/studies", params={"StudyInstanceUID": study}).json()
        assert sorted(studies[0]["00080061"]["Value"]) == ["CT", "SEG"]
        one = reader.get(f"/dicomweb/studies/{study}/series/{seg_series}/instances/{seg.SOPInstanceUID}")
        assert blob in one.content
        again = stow(reader, [blob])  # the case is closed now: the same SEG is no longer anyone's contour
        assert again.status_code == 409


def test_a_seg_corrected_from_the_automatic_one_is_accepted(q: Stack) -> None:
    """Correcting beats redrawing: a SEG derived from the auto-segmentation's (same segment, same referenced
    series, new UIDs, some voxels erased, as OHIF's export of an edited segmentation) is the contour."""
    datasets, case_id = manual_case(q)
    auto = seg_blob(datasets, manual=False)
    corrected = pydicom.dcmread(io.BytesIO(to_blob(auto)))
    corrected.SOPInstanceUID = corrected.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    corrected.SeriesInstanceUID, corrected.SeriesDescription = generate_uid(), "corrected in OHIF"
    bits = np.unpackbits(np.frombuffer(corrected.PixelData, np.uint8), bitorder="little")
    rows, cols = int(corrected.Rows), int(corrected.Columns)
    frame0 = bits[: rows * cols].reshape(rows, cols)
    frame0[8:20, 8:14] = 0  # half the box erased on one slice
    corrected.PixelData = np.packbits(bits, bitorder="little").tobytes()
    with q.client("radiologist") as reader:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        r = stow(reader, [to_blob(corrected)])
        assert r.status_code == 200, r.text
    contour = q.scalar("SELECT contour_path FROM cases WHERE id=:i", i=case_id)
    stored = np.asarray(nib.load(q.storage / str(contour)).dataobj)
    assert int(stored.sum()) == int(box(datasets).sum()) - 12 * 6


def test_a_label_map_seg_in_rle_as_ohif_stores_it_is_accepted(q: Stack) -> None:
    """OHIF 3.13 stores a segmentation as a Label Map SEG (SOP class ...66.7) in RLE Lossless by default."""
    datasets, case_id = manual_case(q)
    liver = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Liver", segmented_property_category=codes.cid7150.AnatomicalStructure,
        segmented_property_type=codes.SCT.Liver, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=_prepared_sources(datasets), pixel_array=box(datasets), segment_descriptions=[liver],
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP, transfer_syntax_uid=RLELossless,
        series_instance_uid=generate_uid(), series_number=901, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="OHIF", manufacturer_model_name="OHIF Viewer", software_versions="3.13.2",
        device_serial_number="1",
    )  # fmt: skip
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    with q.client("radiologist") as reader:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        r = stow(reader, [to_blob(seg)])
        assert r.status_code == 200, r.text
    contour = q.scalar("SELECT contour_path FROM cases WHERE id=:i", i=case_id)
    assert int(np.asarray(nib.load(q.storage / str(contour)).dataobj).sum()) == int(box(datasets).sum())


def test_the_seg_ohif_itself_exported_is_accepted(q: Stack) -> None:
    """tests/data/ohif-3.13.2-labelmap-seg.dcm: what OHIF 3.13.2 stored by STOW-RS from /viewer/ after a
    radiologist erased part of a liver SEG over the Apache-2.0 sample (a label map in RLE whose frames have no
    FrameContentSequence, segment coded T-D0050 but labelled Liver). It was refused (0xA900, highdicom could not
    read it) until the frames were placed by their source images."""
    sample = ROOT / "samples" / "totalseg-example" / "ct-dicom"
    blobs = [p.read_bytes() for p in sorted(sample.iterdir())]
    series_uid = str(pydicom.dcmread(io.BytesIO(blobs[0]), stop_before_pixels=True).SeriesInstanceUID)
    with q.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{series_uid}/complete")
    state = q.wait_status(series_uid, {"manual"})
    case_id = q.scalar("SELECT id FROM cases WHERE series_id=:i", i=state["id"])
    exported = (ROOT / "tests" / "data" / "ohif-3.13.2-labelmap-seg.dcm").read_bytes()
    with q.client("radiologist") as reader:
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        r = stow(reader, [exported])
        assert r.status_code == 200, r.text
    contour = q.scalar("SELECT contour_path FROM cases WHERE id=:i", i=case_id)
    liver = int(pydicom.dcmread(io.BytesIO(exported)).pixel_array.astype(bool).sum())
    assert int(np.asarray(nib.load(q.storage / str(contour)).dataobj).sum()) == liver == 360609


def test_each_refusal_names_its_reason_and_changes_nothing(q: Stack) -> None:
    datasets, case_id = manual_case(q)
    other, other_case = manual_case(q)
    seg = seg_blob(datasets)
    with q.client("radiologist") as reader, q.client("admin") as colleague:
        # the case is open, not claimed
        r = stow(reader, [to_blob(seg)])
        assert r.status_code == 409
        refused(r, 0xC40B, f"claim case {case_id} first (it is not claimed by you)")
        unchanged(q, case_id, seg, status="open")
        # another reader holds it
        assert colleague.post(f"/queue/{case_id}/claim").status_code == 200
        r = stow(reader, [to_blob(seg)])
        refused(r, 0xC40B, f"case {case_id} is claimed by another reader")
        assert colleague.post(f"/queue/{case_id}/release").status_code == 200
        # the SEG is of another series than the one whose case the reader holds (that series' case is closed)
        assert reader.post(f"/queue/{other_case}/claim").status_code == 200
        assert reader.post(f"/queue/{other_case}/reject", json={"reason": "not liver"}).status_code == 200
        assert reader.post(f"/queue/{case_id}/claim").status_code == 200
        r = stow(reader, [to_blob(seg_blob(other))])
        refused(r, 0xC40B, f"series of no open case; you hold case {case_id}")
        # another frame of reference
        moved = seg_blob(datasets)
        moved.FrameOfReferenceUID = generate_uid()
        r = stow(reader, [to_blob(moved)])
        assert r.status_code == 400
        refused(r, 0xA900, "FrameOfReferenceUID differs from the series'")
        unchanged(q, case_id, moved)
        # another grid: the same instances and frame of reference at 16 x 16
        small = []
        for ds in datasets:
            s = pydicom.dcmread(io.BytesIO(to_blob(ds)))
            s.Rows = s.Columns = 16
            s.PixelData = s.PixelData[: 16 * 16 * 2]
            small.append(s)
        coarse = seg_blob(small)
        r = stow(reader, [to_blob(coarse)])
        refused(r, 0xA900, "SEG grid is 16 x 16 (Rows x Columns) but the series is 32 x 32")
        unchanged(q, case_id, coarse)
        # no liver segment
        tissue = seg_blob(datasets)
        tissue.SegmentSequence[0].SegmentLabel = "Segment 1"
        tissue.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue = "85756007"
        r = stow(reader, [to_blob(tissue)])
        assert "SEG has no liver segment" in r.json()["00081198"]["Value"][0]["00000902"]["Value"][0]
        unchanged(q, case_id, tissue)
        # a radiologist stores contours, not images; a PACS does not store contours
        r = stow(reader, [to_blob(datasets[0])])
        refused(r, 0x0122, "a radiologist stores DICOM SEG contours only")
        with q.client("pacs") as pacs:
            assert stow(pacs, [to_blob(seg)]).json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0122]
        unchanged(q, case_id, seg)
        # the right SEG is still taken after all that
        assert stow(reader, [to_blob(seg)]).status_code == 200


def test_a_monitoring_token_cannot_store(q: Stack) -> None:
    datasets, _ = manual_case(q, n=2)
    with q.client("monitoring") as c, q.client("ml_engineer") as m:
        assert stow(c, [to_blob(seg_blob(datasets))]).status_code == 403
        assert stow(m, [to_blob(seg_blob(datasets))]).status_code == 403

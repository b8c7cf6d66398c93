"""What a web viewer (OHIF) asks of the DICOMweb side, over real HTTP: frames, bulk data, rendered frames and
the QIDO-RS matching its study list sends."""

from __future__ import annotations

import io
import uuid

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from app.client import stow
from app.services.multipart import parse_content_type
from testkit.dicom_factory import SeriesSpec, ct_dataset, to_bytes
from tests.conftest import Stack

pytestmark = pytest.mark.integration
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"  # what OHIF 3 sends


def parts(r: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    _, params = parse_content_type(r.headers["content-type"])
    out = []
    for chunk in r.content.split(b"--" + params["boundary"].encode())[1:-1]:
        head, body = chunk.split(b"\r\n\r\n", 1)
        media = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-type"))  # fmt: skip
        out.append((media, body[:-2]))
    return out


@pytest.fixture(scope="module")
def study(stack: Stack) -> tuple[SeriesSpec, list[Dataset]]:
    """Three CT slices of a patient with a name of their own; the first carries an icon (a nested bulk value)."""
    spec = SeriesSpec(n=3, patient_name=f"V{uuid.uuid4().hex[:8]}^W{uuid.uuid4().hex[:8]}", study_date="20250612")
    spec.study_uid, spec.series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    datasets = [ct_dataset(spec, i) for i in range(spec.n)]
    datasets[0].WindowCenter, datasets[0].WindowWidth = 40, 400
    icon = Dataset()
    icon.Rows, icon.Columns, icon.BitsAllocated = 64, 64, 16
    icon.PixelData = bytes(range(256)) * 32  # 8192 bytes: above the 4096-byte bulk threshold
    datasets[0].IconImageSequence = [icon]
    with stack.client() as c:
        assert stow(c, [to_bytes(d) for d in datasets]).status_code == 200
    return spec, datasets


def _base(spec: SeriesSpec, ds: Dataset) -> str:
    return f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/instances/{ds.SOPInstanceUID}"


def test_frames_are_the_stored_pixels_as_octet_stream(pacs: httpx.Client, study: tuple) -> None:
    spec, datasets = study
    r = pacs.get(f"{_base(spec, datasets[1])}/frames/1", headers={"Accept": OHIF_FRAMES})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith('multipart/related; type="application/octet-stream"')
    [(media, body)] = parts(r)
    assert media == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert body == datasets[1].PixelData
    two = parts(pacs.get(f"{_base(spec, datasets[1])}/frames/1,1", headers={"Accept": OHIF_FRAMES}))
    assert [b for _, b in two] == [datasets[1].PixelData] * 2


def test_bad_frame_requests_are_refused_precisely(pacs: httpx.Client, study: tuple) -> None:
    spec, datasets = study
    base = _base(spec, datasets[0])
    past = pacs.get(f"{base}/frames/2", headers={"Accept": OHIF_FRAMES})
    assert past.status_code == 404 and "frame 2 does not exist: the instance has 1 frame(s)" in past.text
    for bad in ("0", "1,x", "-1"):
        r = pacs.get(f"{base}/frames/{bad}", headers={"Accept": OHIF_FRAMES})
        assert r.status_code == 400 and "frame numbers" in r.json()["detail"], (bad, r.text)
    assert pacs.get(f"{base}/frames/1", headers={"Accept": "image/png"}).status_code == 406
    other = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/instances/1.2.3/frames/1")
    assert other.status_code == 404


def test_metadata_names_bulk_data_that_can_be_fetched(pacs: httpx.Client, study: tuple) -> None:
    spec, datasets = study
    meta = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/metadata").json()
    first = next(m for m in meta if m["00080018"]["Value"][0] == datasets[0].SOPInstanceUID)
    pixel_uri = first["7FE00010"]["BulkDataURI"]
    icon_uri = first["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
    assert pixel_uri.endswith(f"{_base(spec, datasets[0])}/bulkdata/7FE00010")
    assert icon_uri.endswith(f"{_base(spec, datasets[0])}/bulkdata/00880200/0/7FE00010")
    [(media, pixels)] = parts(
        pacs.get(pixel_uri, headers={"Accept": "multipart/related; type=application/octet-stream"})
    )
    assert media.startswith("application/octet-stream") and pixels == datasets[0].PixelData
    [(_, icon)] = parts(pacs.get(icon_uri))
    assert icon == datasets[0].IconImageSequence[0].PixelData
    missing = pacs.get(pixel_uri.replace("7FE00010", "00880200/3/7FE00010"))
    assert missing.status_code == 404 and "no item 3" in missing.text
    assert pacs.get(pixel_uri.replace("7FE00010", "zz")).status_code == 400


def test_rendered_frame_is_a_windowed_png(pacs: httpx.Client, study: tuple) -> None:
    spec, datasets = study
    base = _base(spec, datasets[0])
    r = pacs.get(f"{base}/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(r.content)))
    assert image.shape == (32, 32) and image.dtype == np.uint8
    # the stored window (40 / 400 HU) over values -1024 .. -1024+1023: what lies above 240 HU is white
    hu = np.frombuffer(datasets[0].PixelData, np.int16).reshape(32, 32).astype(float) - 1024
    expected = np.clip((hu - (40 - 200)) / 400, 0, 1) * 255
    assert np.abs(image.astype(float) - expected).max() <= 1
    wide = np.asarray(
        Image.open(io.BytesIO(pacs.get(f"{base}/frames/1/rendered", params={"window": "0,4000"}).content))
    )
    assert not np.array_equal(wide, image)
    jpeg = pacs.get(f"{base}/frames/1/rendered", headers={"Accept": "image/jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
    bad = pacs.get(f"{base}/rendered", params={"window": "40,-1"})
    assert bad.status_code == 400 and "window" in bad.json()["detail"]
    assert pacs.get(f"{base}/frames/2/rendered").status_code == 404


def test_the_study_list_queries_of_ohif_match(pacs: httpx.Client, study: tuple) -> None:
    """The parameters OHIF's work list sends: wildcards on the name, a date range, the modality, includefield,
    limit and offset."""
    spec, _ = study
    family, given = spec.patient_name.split("^")
    common = {"limit": "101", "offset": "0", "fuzzymatching": "false", "includefield": "00081030,00080060"}
    names = (f"{family[:6]}*", f"*{given[-5:]}", f"??{spec.patient_name[2:].lower()}", spec.patient_name.upper())
    others = ({"StudyDate": "20250601-20250630"}, {"StudyDate": "20250612-"}, {"ModalitiesInStudy": "CT"}, {})
    for name, match in zip(names, others, strict=True):
        r = pacs.get("/dicomweb/studies", params={**common, **match, "PatientName": name})
        assert r.status_code == 200, (name, match, r.text)
        uids = [s["0020000D"]["Value"][0] for s in r.json()]
        assert uids == [spec.study_uid], (name, match)
        assert "00080061" in r.json()[0] and "00201208" in r.json()[0]
    for miss in ({"StudyDate": "20250701-20250731"}, {"ModalitiesInStudy": "MR"}):
        assert pacs.get("/dicomweb/studies", params={**common, **miss, "PatientName": f"{family}*"}).status_code == 204
    assert pacs.get("/dicomweb/studies", params={"PatientName": f"{family}*", "offset": "1"}).status_code == 204
    series = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series", params={"includefield": "all"}).json()
    assert [s["00080060"]["Value"] for s in series] == [["CT"]]

"""QIDO-RS search and WADO-RS retrieval of what was stored."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from app.client import stow
from app.services.multipart import parse_content_type
from testkit.dicom_factory import make_series
from tests.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stored(stack: Stack) -> tuple:
    spec, blobs = make_series(3, study_date="20240315", accession="QW123", patient_id="QW-PID")
    with stack.client() as c:
        assert stow(c, blobs).status_code == 200
    return spec, blobs


def test_search_studies_by_uid_date_and_accession(pacs: httpx.Client, stored: tuple) -> None:
    spec, _ = stored
    for params in ({"StudyInstanceUID": spec.study_uid}, {"AccessionNumber": "QW123"},
                   {"StudyDate": "20240301-20240331", "PatientID": "QW-PID"}, {"StudyDate": "20240315"}):  # fmt: skip
        r = pacs.get("/dicomweb/studies", params=params)
        assert r.status_code == 200, params
        uids = [s["0020000D"]["Value"][0] for s in r.json()]
        assert spec.study_uid in uids
        study = next(s for s in r.json() if s["0020000D"]["Value"][0] == spec.study_uid)
        assert study["00201208"]["Value"] == [3] and study["00080061"]["Value"] == ["CT"]


def test_no_match_is_204(pacs: httpx.Client) -> None:
    assert pacs.get("/dicomweb/studies", params={"StudyDate": "19000101"}).status_code == 204


def test_bad_query_is_4xx(pacs: httpx.Client) -> None:
    assert pacs.get("/dicomweb/studies", params={"StudyDate": "2024-03"}).status_code == 400
    assert pacs.get("/dicomweb/studies", params={"StudyInstanceUID": "abc"}).status_code == 400


def test_series_and_instances(pacs: httpx.Client, stored: tuple) -> None:
    spec, _ = stored
    series = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series").json()
    assert [s["0020000E"]["Value"][0] for s in series] == [spec.series_uid]
    inst = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/instances").json()
    assert len(inst) == 3


def _parts(r: httpx.Response) -> list[bytes]:
    _, params = parse_content_type(r.headers["content-type"])
    delim = b"--" + params["boundary"].encode()
    chunks = r.content.split(delim)[1:-1]
    return [c.split(b"\r\n\r\n", 1)[1][:-2] for c in chunks]


def test_retrieve_series_and_instance_bytes_identical(pacs: httpx.Client, stored: tuple) -> None:
    spec, blobs = stored
    r = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}",
                 headers={"Accept": 'multipart/related; type="application/dicom"'})  # fmt: skip
    assert r.status_code == 200
    got = {hashlib.sha256(p).hexdigest() for p in _parts(r)}
    assert got == {hashlib.sha256(b).hexdigest() for b in blobs}
    sop = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/instances").json()[0]
    uid = sop["00080018"]["Value"][0]
    one = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/instances/{uid}")
    assert len(_parts(one)) == 1


def test_metadata(pacs: httpx.Client, stored: tuple) -> None:
    spec, _ = stored
    meta = pacs.get(f"/dicomweb/studies/{spec.study_uid}/series/{spec.series_uid}/metadata").json()
    assert len(meta) == 3 and all("BulkDataURI" in m["7FE00010"] for m in meta)
    assert meta[0]["00080060"]["Value"] == ["CT"]


def test_unknown_is_404_and_bad_accept_406(pacs: httpx.Client, stored: tuple) -> None:
    spec, _ = stored
    assert pacs.get("/dicomweb/studies/1.2.3.999").status_code == 404
    r = pacs.get(f"/dicomweb/studies/{spec.study_uid}", headers={"Accept": "image/png"})
    assert r.status_code == 406

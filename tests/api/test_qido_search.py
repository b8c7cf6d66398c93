"""QIDO-RS (PS3.18 10.6, matching per PS3.4 C.2.2.2) on both databases, through the real stack.

Every resource, every kind of matching the service offers, and the refusals: an attribute the service
cannot match is a 400 that names it, never a filter silently dropped (issue #12, item 2).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
import pytest
from pydicom.uid import generate_uid

from app.client import stow
from testkit.dicom_factory import SeriesSpec, ct_dataset, to_bytes
from tests.conftest import Stack

pytestmark = pytest.mark.integration


@dataclass
class Visit:
    study_uid: str
    series_uid: str
    sop_uids: list[str]


@dataclass
class Stored:
    tag: str  # makes this module's patients unique on a stack other tests share
    a: Visit  # DOE^JANE, 2001-06-15 11:30, 3 instances
    b: Visit  # Roe^Richard, 2002-01-01 09:00, 2 instances


def _push(c: httpx.Client, *, patient_id: str, name: str, date: str, time: str, description: str, n: int) -> Visit:
    spec = SeriesSpec(n=n, study_uid=generate_uid(), series_uid=generate_uid(), patient_name=name,
                      patient_id=patient_id, study_date=date, accession=patient_id)  # fmt: skip
    blobs, sops = [], []
    for i in range(n):
        ds = ct_dataset(spec, i)
        ds.StudyTime, ds.StudyDescription, ds.SeriesDescription = time, description, f"{description} series"
        blobs.append(to_bytes(ds))
        sops.append(str(ds.SOPInstanceUID))
    assert stow(c, blobs).status_code == 200
    return Visit(spec.study_uid, spec.series_uid, sops)


@pytest.fixture(scope="module")
def stored(any_stack: Stack) -> Stored:
    tag = uuid.uuid4().hex[:8].upper()
    with any_stack.client("pacs") as c:
        a = _push(c, patient_id=f"QS{tag}-A", name="DOE^JANE", date="20010615", time="113000",
                  description="LIVER 50% DOSE", n=3)  # fmt: skip
        b = _push(c, patient_id=f"QS{tag}_B", name="Roe^Richard", date="20020101", time="0900",
                  description="ABDOMEN", n=2)  # fmt: skip
    return Stored(tag, a, b)


@pytest.fixture
def reader(any_stack: Stack) -> httpx.Client:
    with any_stack.client("radiologist") as c:
        yield c  # type: ignore[misc]


def _uids(r: httpx.Response, tag: str = "0020000D") -> list[str]:
    if r.status_code == 204:
        return []
    assert r.status_code == 200, r.text
    return [item[tag]["Value"][0] for item in r.json()]


def test_series_of_all_studies_match_study_and_patient_keys(reader: httpx.Client, stored: Stored) -> None:
    a, b = stored.a, stored.b
    assert _uids(reader.get("/dicomweb/series", params={"StudyInstanceUID": a.study_uid}), "0020000E") == [a.series_uid]
    assert reader.get("/dicomweb/series", params={"PatientID": "NOBODY"}).status_code == 204
    got = reader.get("/dicomweb/series", params={"PatientID": f"QS{stored.tag}_B"})
    assert _uids(got, "0020000E") == [b.series_uid]
    # all-series results carry the study's attributes too (PS3.18 10.6.3.3)
    assert got.json()[0]["00100020"]["Value"] == [f"QS{stored.tag}_B"]


def test_instances_of_a_study_and_of_all_studies(reader: httpx.Client, stored: Stored) -> None:
    a = stored.a
    got = reader.get(f"/dicomweb/studies/{a.study_uid}/instances")
    assert sorted(_uids(got, "00080018")) == sorted(a.sop_uids)
    assert got.json()[0]["0020000E"]["Value"] == [a.series_uid]
    one = reader.get("/dicomweb/instances", params={"SOPInstanceUID": a.sop_uids[1]})
    assert _uids(one, "00080018") == [a.sop_uids[1]]
    assert one.json()[0]["00100010"]["Value"] == [{"Alphabetic": "DOE^JANE"}]
    by_patient = reader.get("/dicomweb/instances", params={"PatientID": f"QS{stored.tag}-A", "InstanceNumber": "2"})
    assert _uids(by_patient, "00080018") == [a.sop_uids[1]]
    nested = reader.get(f"/dicomweb/studies/{a.study_uid}/series/{a.series_uid}/instances",
                        params={"SOPInstanceUID": a.sop_uids[0]})  # fmt: skip
    assert _uids(nested, "00080018") == [a.sop_uids[0]]
    assert reader.get(f"/dicomweb/studies/{stored.b.study_uid}/series/{a.series_uid}/instances").status_code == 204


@pytest.mark.parametrize(
    ("params", "expect"),
    [
        ({"PatientID": "QS{tag}*"}, "ab"),
        ({"PatientID": "QS{tag}?A"}, "a"),
        ({"PatientID": "qs{tag}*"}, ""),  # case-sensitive on both databases (SQLite's LIKE is not)
        ({"PatientID": "QS{tag}%"}, ""),  # SQL LIKE metacharacters are literals
        ({"PatientID": "QS{tag}-_"}, ""),
        ({"PatientID": "QS{tag}_B"}, "b"),
        ({"PatientID": "QS{tag}_*"}, "b"),
        ({"PatientID": "QS{tag}*", "PatientName": "doe*"}, "a"),  # PN ignores case
        ({"PatientID": "QS{tag}*", "PatientName": "*richard"}, "b"),
        ({"PatientID": "QS{tag}*", "PatientName": "*"}, "ab"),  # universal
        ({"PatientID": "QS{tag}*", "StudyDescription": "*50%*"}, "a"),
        ({"PatientID": "QS{tag}*", "StudyDescription": "liver*"}, ""),
        ({"PatientID": "QS{tag}*", "StudyDate": "20010101-20011231"}, "a"),
        ({"PatientID": "QS{tag}*", "StudyDate": "-20011231"}, "a"),
        ({"PatientID": "QS{tag}*", "StudyDate": "20020101-"}, "b"),
        ({"PatientID": "QS{tag}*", "StudyDate": "20020101"}, "b"),
        ({"PatientID": "QS{tag}*", "StudyTime": "1100-1200"}, "a"),
        ({"PatientID": "QS{tag}*", "StudyTime": "-09"}, "b"),  # an upper bound to the hour includes 09:59:59
        ({"PatientID": "QS{tag}*", "ModalitiesInStudy": "MR,CT"}, "ab"),
        ({"PatientID": "QS{tag}*", "ModalitiesInStudy": "MR"}, ""),
        ({"StudyInstanceUID": "{a},{b}"}, "ab"),
        ({"StudyInstanceUID": "{a}\\{b}"}, "ab"),
        ({"0020000D": "{b}"}, "b"),  # a tag instead of a keyword
        ({"AccessionNumber": "QS{tag}-A"}, "a"),
        ({"PatientID": "QS{tag}*", "fuzzymatching": "false"}, "ab"),
    ],
)
def test_study_matching(reader: httpx.Client, stored: Stored, params: dict[str, str], expect: str) -> None:
    fill = {"tag": stored.tag, "a": stored.a.study_uid, "b": stored.b.study_uid}
    query = {k: v.format(**fill) for k, v in params.items()}
    want = [{"a": stored.a, "b": stored.b}[k].study_uid for k in expect]
    assert _uids(reader.get("/dicomweb/studies", params=query)) == want, query


def test_series_matching_within_a_study(reader: httpx.Client, stored: Stored) -> None:
    a = stored.a
    for params in ({"Modality": "CT"}, {"SeriesNumber": "1"}, {"SeriesDescription": "LIVER*"}, {}):
        assert _uids(reader.get(f"/dicomweb/studies/{a.study_uid}/series", params=params), "0020000E") == [
            a.series_uid
        ], params
    for params in ({"Modality": "MR"}, {"SeriesNumber": "2"}, {"SeriesDescription": "liver*"}):
        assert reader.get(f"/dicomweb/studies/{a.study_uid}/series", params=params).status_code == 204, params


def test_includefield_limit_and_offset(reader: httpx.Client, stored: Stored) -> None:
    scope = {"PatientID": f"QS{stored.tag}*"}
    plain = reader.get("/dicomweb/studies", params=scope).json()[0]
    assert "00081030" not in plain and plain["00100020"]["Value"] == [f"QS{stored.tag}-A"]
    assert plain["00201208"]["Value"] == [3] and plain["00080061"]["Value"] == ["CT"]
    for include in ("StudyDescription", "00081030", "all"):
        study = reader.get("/dicomweb/studies", params={**scope, "includefield": include}).json()[0]
        assert study["00081030"]["Value"] == ["LIVER 50% DOSE"], include
    series = reader.get("/dicomweb/series", params={**scope, "includefield": "SeriesDescription,StudyDescription"})
    assert series.json()[0]["0008103E"]["Value"] == ["LIVER 50% DOSE series"]
    assert series.json()[0]["00081030"]["Value"] == ["LIVER 50% DOSE"]
    first = reader.get("/dicomweb/studies", params={**scope, "limit": "1"})
    assert _uids(first) == [stored.a.study_uid] and "additional results" in first.headers["warning"]
    assert _uids(reader.get("/dicomweb/studies", params={**scope, "limit": "1", "offset": "1"})) == [stored.b.study_uid]
    assert reader.get("/dicomweb/studies", params={**scope, "offset": "2"}).status_code == 204


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/dicomweb/studies", {"PatientWeight": "70"}, "PatientWeight"),
        ("/dicomweb/studies", {"NoSuchKeyword": "1"}, "NoSuchKeyword"),
        ("/dicomweb/studies", {"SeriesInstanceUID": "1.2.3"}, "SeriesInstanceUID"),  # a series key at study level
        ("/dicomweb/studies/1.2.3/series", {"PatientID": "X"}, "PatientID"),
        ("/dicomweb/series", {"Foo": "1"}, "Foo"),
        ("/dicomweb/instances", {"Rows": "512"}, "Rows"),
        ("/dicomweb/studies", {"fuzzymatching": "true"}, "fuzzymatching"),
        ("/dicomweb/studies", {"StudyInstanceUID": "1.2.*"}, "StudyInstanceUID"),
        ("/dicomweb/studies", {"StudyInstanceUID": "abc"}, "StudyInstanceUID"),
        ("/dicomweb/studies", {"StudyDate": "2001-06"}, "StudyDate"),
        ("/dicomweb/studies", {"StudyDate": "20011301"}, "StudyDate"),
        ("/dicomweb/studies", {"StudyDate": "20020101-20010101"}, "StudyDate"),
        ("/dicomweb/studies", {"StudyTime": "2500"}, "StudyTime"),
        ("/dicomweb/studies", {"PatientID": "A\\B"}, "PatientID"),
        ("/dicomweb/studies", {"PatientID": "A", "00100020": "B"}, "PatientID"),  # given twice
        ("/dicomweb/series", {"SeriesNumber": "one"}, "SeriesNumber"),
        ("/dicomweb/studies", {"includefield": "NoSuchKeyword"}, "includefield"),
        ("/dicomweb/studies", {"limit": "0"}, "limit"),
        ("/dicomweb/studies", {"offset": "-1"}, "offset"),
        ("/dicomweb/studies", {"00400275.00321060": "X"}, "sequence"),
    ],
)
def test_unsupported_or_bad_filters_are_refused(
    reader: httpx.Client, stored: Stored, path: str, params: dict[str, str], says: str
) -> None:
    r = reader.get(path, params=params)
    assert r.status_code == 400, (path, params, r.status_code)
    assert says in r.json()["detail"], r.json()

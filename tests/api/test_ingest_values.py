"""Values real PACS send (issue #12 item 5), on PostgreSQL: the bad instance fails alone, never a 500.

The file keeps its original bytes; the index holds a normalised copy (padding stripped, the ACR-NEMA date
form read as YYYYMMDD); a value that violates its VR in an indexed attribute is refused, never truncated.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from app.client import stow
from testkit.dicom_factory import ct_dataset, make_series, to_bytes
from tests.conftest import Stack

pytestmark = pytest.mark.integration

BAD = {  # attribute: value that violates its VR, as real PACS send them
    "PatientID": "P" * 65,
    "AccessionNumber": "A" * 17,
    "InstanceNumber": "99999999999",
}


def _one(attribute: str, value: str) -> bytes:
    spec, _ = make_series(1)
    ds = ct_dataset(spec, 0)
    setattr(ds, attribute, value)
    return to_bytes(ds)


def test_bad_values_fail_alone_and_good_instances_are_stored(stack: Stack, pacs: httpx.Client) -> None:
    spec, good = make_series(2)
    bad = [_one(k, v) for k, v in BAD.items()] + [_one("PatientID", "AB\x00CD")]
    legacy_spec, _ = make_series(1)
    ds = ct_dataset(legacy_spec, 0)
    ds.StudyDate, ds.PatientID = "2001.01.01", "PADDED\x00"  # ACR-NEMA date; NUL padding
    legacy = to_bytes(ds)
    r = stow(pacs, [good[0], *bad, legacy, good[1]])
    assert r.status_code == 202, r.text
    failed = r.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0xA900] * 4
    messages = [f["00000902"]["Value"][0] for f in failed]
    for message, attribute in zip(messages, [*BAD, "PatientID"], strict=True):
        assert attribute in message, message
    assert "P" * 65 not in r.text and "A" * 17 not in r.text and "99999999999" not in r.text
    assert len(r.json()["00081199"]["Value"]) == 3
    assert stack.scalar("SELECT count(*) FROM instances i JOIN series s ON s.id = i.series_id "
                        "WHERE s.series_uid = :u", u=spec.series_uid) == 2  # fmt: skip
    row = stack.rows("SELECT st.study_date, st.patient_id, i.sha256 FROM instances i "
                     "JOIN series s ON s.id = i.series_id JOIN studies st ON st.id = s.study_id "
                     "WHERE s.series_uid = :u", u=legacy_spec.series_uid)  # fmt: skip
    assert row == [("20010101", "PADDED", hashlib.sha256(legacy).hexdigest())]  # original bytes kept


@pytest.mark.parametrize("attribute", sorted(BAD))
def test_peer_push_of_a_bad_value_is_400(pacs: httpx.Client, attribute: str) -> None:
    r = pacs.post("/instances", content=_one(attribute, BAD[attribute]), headers={"Content-Type": "application/dicom"})
    assert r.status_code == 400, r.text
    assert r.json()["FailureReason"] == 0xA900 and attribute in r.json()["Message"]

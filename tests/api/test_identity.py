"""Identity rules (issue #12 item 1): an instance never joins a study or series of another patient.

Through real HTTP, a Celery worker and both databases: the conflicting instance gets a failure item with a
precise reason and an audit event without PHI; the stored series is not re-opened, not counted, not mixed.
"""

from __future__ import annotations

import json

import httpx
import pytest
from pydicom.uid import generate_uid

from app.client import stow
from testkit.dicom_factory import SeriesSpec, ct_dataset, make_series, to_bytes
from tests.conftest import Stack

pytestmark = pytest.mark.integration
PATIENT_CONFLICT, SERIES_CONFLICT = 0xA778, 0xC40A
FOREIGN = "OTHER-PATIENT-777"


def _failures(r: httpx.Response) -> list[tuple[int, str]]:
    items = r.json().get("00081198", {}).get("Value", [])
    return [(i["00081197"]["Value"][0], i["00000902"]["Value"][0]) for i in items]


def _series(stack: Stack, series_uid: str) -> tuple:
    [row] = stack.rows("SELECT s.status, s.revision, s.instance_count, st.study_uid, st.patient_id FROM series s "
                       "JOIN studies st ON st.id = s.study_id WHERE s.series_uid = :u", u=series_uid)  # fmt: skip
    return row


def _conflict_audits(stack: Stack) -> list[str]:
    rows = stack.rows("SELECT detail FROM audit_events WHERE action = 'instance.identity_conflict' ORDER BY id")
    return [str(d) for (d,) in rows]


def _foreign(spec: SeriesSpec, index: int, **changes: object) -> bytes:
    ds = ct_dataset(spec, index)
    for key, value in changes.items():
        setattr(ds, key, value)
    return to_bytes(ds)


def test_foreign_patient_in_a_completed_series_is_refused_and_does_not_reopen_it(any_stack: Stack) -> None:
    spec, blobs = make_series(3)
    with any_stack.client("pacs") as pacs:
        assert stow(pacs, blobs).status_code == 200
        assert pacs.post(f"/series/{spec.series_uid}/complete").status_code == 200
        any_stack.wait_status(spec.series_uid, {"auto", "manual", "failed"})
        before, audits = _series(any_stack, spec.series_uid), len(_conflict_audits(any_stack))
        other_study = generate_uid()
        r = stow(pacs, [_foreign(spec, 3, StudyInstanceUID=other_study, PatientID=FOREIGN)])
    assert r.status_code == 409, r.text
    [(code, message)] = _failures(r)
    assert code == SERIES_CONFLICT and "StudyInstanceUID" in message, message
    assert "00081199" not in r.json()  # no RetrieveURL to a study that does not exist
    assert _series(any_stack, spec.series_uid) == before  # not re-opened, not counted, same revision
    assert any_stack.scalar("SELECT count(*) FROM studies WHERE study_uid = :u", u=other_study) == 0
    details = _conflict_audits(any_stack)
    assert len(details) == audits + 1
    assert FOREIGN not in details[-1] and spec.series_uid not in details[-1] and other_study not in details[-1]


def test_other_patient_under_an_existing_study_is_refused(any_stack: Stack) -> None:
    spec, blobs = make_series(2)
    other = SeriesSpec(n=1, study_uid=spec.study_uid, series_uid=generate_uid(), patient_id=FOREIGN)
    with any_stack.client("pacs") as pacs:
        assert stow(pacs, blobs).status_code == 200
        r = stow(pacs, [to_bytes(ct_dataset(other, 0))])
        assert r.status_code == 409, r.text
        [(code, message)] = _failures(r)
        assert code == PATIENT_CONFLICT and "PatientID" in message and FOREIGN not in r.text
        assert any_stack.scalar("SELECT count(*) FROM series WHERE series_uid = :u", u=other.series_uid) == 0
        # the same patient may add a series to the study
        same = SeriesSpec(n=1, study_uid=spec.study_uid, series_uid=generate_uid(), patient_id=spec.patient_id)
        assert stow(pacs, [to_bytes(ct_dataset(same, 0))]).status_code == 200


def test_mixing_within_one_request_stores_the_first_patient_only(any_stack: Stack) -> None:
    spec, blobs = make_series(2)
    with any_stack.client("pacs") as pacs:
        r = stow(pacs, [blobs[0], _foreign(spec, 2, PatientID=FOREIGN), blobs[1]])
    assert r.status_code == 202, r.text
    assert [code for code, _ in _failures(r)] == [PATIENT_CONFLICT]
    assert _series(any_stack, spec.series_uid)[2:] == (2, spec.study_uid, spec.patient_id)


def test_issuer_and_frame_of_reference_must_agree(any_stack: Stack) -> None:
    spec, _ = make_series(1)
    with any_stack.client("pacs") as pacs:
        assert stow(pacs, [_foreign(spec, 0, IssuerOfPatientID="HOSPITAL-A")]).status_code == 200
        r = stow(pacs, [_foreign(spec, 1, IssuerOfPatientID="HOSPITAL-B")])
        assert r.status_code == 409 and _failures(r)[0][0] == PATIENT_CONFLICT, r.text
        assert "IssuerOfPatientID" in _failures(r)[0][1]
        r = stow(pacs, [_foreign(spec, 2, IssuerOfPatientID="HOSPITAL-A", FrameOfReferenceUID=generate_uid())])
        assert r.status_code == 409 and _failures(r)[0][0] == SERIES_CONFLICT, r.text
        assert "FrameOfReferenceUID" in _failures(r)[0][1]
    assert _series(any_stack, spec.series_uid)[2] == 1


def test_peer_push_refuses_a_foreign_patient(any_stack: Stack) -> None:
    spec, blobs = make_series(1)
    with any_stack.client("pacs") as pacs:
        assert stow(pacs, blobs).status_code == 200
        r = pacs.post("/instances", content=_foreign(spec, 1, StudyInstanceUID=generate_uid(), PatientID=FOREIGN),
                      headers={"Content-Type": "application/dicom"})  # fmt: skip
    assert r.status_code == 409, r.text
    assert r.json()["FailureReason"] == SERIES_CONFLICT and FOREIGN not in r.text
    assert _series(any_stack, spec.series_uid)[2] == 1
    assert json.loads(_conflict_audits(any_stack)[-1].replace("'", '"'))["attribute"] == "StudyInstanceUID"

"""No PHI in logs, broker payloads or error bodies: a canary study through success and failure paths."""

from __future__ import annotations

import io

import pydicom
import pytest
import redis

from app.client import stow
from testkit.dicom_factory import make_series, to_bytes

pytestmark = pytest.mark.integration
CANARIES = {"name": "Canaryname^Zebulon", "id": "PID-CANARY-7731", "acc": "ACC-CAN-991", "birth": "19011231"}


def test_canary_never_leaks(stack_factory) -> None:  # type: ignore[no-untyped-def]
    lone = stack_factory(worker=False)
    spec, blobs = make_series(3, patient_name=CANARIES["name"], patient_id=CANARIES["id"], accession=CANARIES["acc"])
    blobs = [_with_birth(b) for b in blobs]
    bodies = []
    with lone.client() as c:
        bodies.append(stow(c, blobs).text)
        conflict = pydicom.dcmread(io.BytesIO(blobs[0]))
        conflict.SeriesDescription = "other bytes"
        bodies.append(stow(c, [to_bytes(conflict)]).text)  # 0x0111 failure path
        bodies.append(stow(c, blobs, study_uid="1.2.3").text)  # study mismatch path
        bodies.append(c.post("/instances", content=blobs[0][:-50]).text)  # truncated
        c.post(f"/series/{spec.series_uid}/complete")
    broker = redis.Redis.from_url(lone.service.env["GATEKEEPER_BROKER_URL"])
    lone.wait_published()
    messages = [m.decode("latin-1") for m in broker.lrange("scoring", 0, -1)]
    lone.service.start_worker()
    lone.wait_status(spec.series_uid, {"manual"})
    lone.service.stop()
    logs = "".join(p.read_text(errors="replace") for p in lone.service.log_dir.glob("*.log"))
    assert messages, "expected the scoring job in the broker"
    for value in CANARIES.values():
        for where, text in [("logs", logs), ("broker", "".join(messages)), ("bodies", "".join(bodies))]:
            assert value not in text, f"{value} found in {where}"


def _with_birth(blob: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(blob))
    ds.PatientBirthDate = CANARIES["birth"]
    return to_bytes(ds)

"""A patient's split is a fixed function of the PatientID, and once stored it never moves.

The expected splits are written out by hand (computed once from sha256 of the PatientID): a split that is
re-randomised (a salt, a seed, another hash) fails every run, since seventeen patients, eleven of them outside
train, would all have to land where they did by chance (about one run in 10^10), not one in ten as before.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import PatientSplit, Series, Study
from app.services import splits

EXPECTED = {
    "P0001": "train", "P0002": "train", "P0004": "train", "P0006": "train", "P0010": "train",
    "GK-E2E-3": "train",  # tests/integration/test_loop_e2e.py relies on these two
    "GK-E2E-9": "test",
    "P0007": "test", "P0014": "test", "P0018": "test", "P0020": "test", "P0022": "test",
    "P0009": "val", "P0011": "val", "P0021": "val", "P0025": "val", "P0034": "val",
}  # fmt: skip
# sha256("P0001"): what the split table keeps instead of the PatientID
P0001_KEY = "11c47747d69a7aa72735cd7d68853b0685b2bdd47113cc37699c8430b4180cc1"
_visit = iter(range(1, 10**9))


def _series_of(db: Session, patient_id: str | None) -> Series:
    """A new study (a new visit) of patient_id with one series."""
    n = next(_visit)
    study = Study(study_uid=f"1.2.826.0.9.{n}", patient_id=patient_id, attributes={})
    db.add(study)
    db.flush()
    series = Series(study_id=study.id, series_uid=f"1.2.826.0.10.{n}", modality="CT", status="manual",
                    last_instance_at=datetime.now(UTC))  # fmt: skip
    db.add(series)
    db.flush()
    return series


@pytest.mark.parametrize("patient_id", sorted(EXPECTED))
def test_the_split_is_a_fixed_function_of_the_patient_id(patient_id: str) -> None:
    key = splits.patient_key(Study(patient_id=patient_id, study_uid="1.2.3"))
    assert splits.choose(key) == EXPECTED[patient_id]


def test_the_key_is_the_sha256_of_the_patient_id_whatever_the_study() -> None:
    assert splits.patient_key(Study(patient_id="P0001", study_uid="1.2.3")) == P0001_KEY
    assert splits.patient_key(Study(patient_id="P0001", study_uid="4.5.6")) == P0001_KEY


def test_assign_stores_the_fixed_split_and_every_visit_gets_it(db: Session) -> None:
    for patient_id in ("P0001", "P0007", "P0009"):
        first, second = _series_of(db, patient_id), _series_of(db, patient_id)
        assert splits.assign(db, series=first) == EXPECTED[patient_id]
        assert splits.assign(db, series=second) == EXPECTED[patient_id]
    assert db.scalar(select(PatientSplit.split).where(PatientSplit.patient_key == P0001_KEY)) == "train"


def test_a_stored_split_wins_over_the_hash(db: Session) -> None:
    """Never moved: a split stored earlier (under other shares, say) is the one every later contour gets."""
    db.add(PatientSplit(patient_key=P0001_KEY, split="val"))
    db.flush()
    assert splits.assign(db, series=_series_of(db, "P0001")) == "val"

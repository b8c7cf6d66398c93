"""Train / validation / test by patient, assigned once and never changed.

A patient's split is chosen from a hash of their key the first time one of
their cases is labelled, and stored; later retrains read the stored split, so
no patient moves between splits and the test split stays frozen.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import PatientSplit, Series, Study

SHARES = (("train", 70), ("val", 15), ("test", 15))


def patient_key(study: Study) -> str:
    """sha256 of the PatientID (or of the study when there is none): no PHI stored in the split table."""
    source = study.patient_id or f"study:{study.study_uid}"
    return hashlib.sha256(source.encode()).hexdigest()


def choose(key: str) -> str:
    bucket = int(key[:8], 16) % 100
    for name, share in SHARES:
        if bucket < share:
            return name
        bucket -= share
    return SHARES[-1][0]


def assign(session: Session, *, series: Series) -> str:
    study = session.get(Study, series.study_id)
    assert study is not None
    key = patient_key(study)
    existing = session.scalar(select(PatientSplit.split).where(PatientSplit.patient_key == key))
    if existing is not None:
        return existing
    split = choose(key)
    session.add(PatientSplit(patient_key=key, split=split))
    session.flush()
    return split

"""The registry's promote, rollback and gate on their own (in process, real PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from app.db import model_versions
from app.db.states import ModelStatus
from app.db.tables import ModelVersion
from app.services import registry


def _version(db: Session, kind: str, version: int, **metrics: float) -> ModelVersion:
    row = ModelVersion(kind=kind, version=version, path=f"{kind}-{version}.pt", sha256="0" * 64, metrics=metrics,
                       card={})  # fmt: skip
    db.add(row)
    db.flush()
    return row


def test_promote_retires_the_current_and_rollback_restores_it(db: Session) -> None:
    a, b = _version(db, "segmenter", 1), _version(db, "segmenter", 2)
    registry.promote(session=db, model_id=a.id, actor="t")
    registry.promote(session=db, model_id=b.id, actor="t")
    db.flush()
    assert (a.status, b.status) == (ModelStatus.RETIRED, ModelStatus.PROMOTED)
    assert model_versions.promoted(db, "segmenter").id == b.id  # type: ignore[union-attr]
    registry.rollback(session=db, kind="segmenter", actor="t")
    db.flush()
    assert (a.status, b.status) == (ModelStatus.PROMOTED, ModelStatus.ROLLED_BACK)


def test_rollback_without_an_earlier_version_is_a_conflict(db: Session) -> None:
    with pytest.raises(registry.RegistryError) as err:
        registry.rollback(session=db, kind="scorer", actor="t")
    assert err.value.status_code == 409


def test_promote_of_an_unknown_version_is_not_found(db: Session) -> None:
    with pytest.raises(registry.ModelNotFound) as err:
        registry.promote(session=db, model_id=10**9, actor="t")
    assert err.value.status_code == 404

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


FLOORS = {"segmenter": 0.7, "scorer": 0.1}


def test_gate_verdict_needs_a_measured_candidate_above_the_floor(db: Session) -> None:
    unmeasured_current = _version(db, "segmenter", 1)
    verdict = registry.gate_verdict
    assert not verdict(_version(db, "segmenter", 2), unmeasured_current, FLOORS)[0]  # no metric
    assert not verdict(_version(db, "segmenter", 3, test_dice_per_slice=0.0), unmeasured_current, FLOORS)[0]
    nan = ModelVersion(kind="segmenter", version=4, metrics={"test_dice_per_slice": float("nan")})  # not stored
    assert not verdict(nan, None, FLOORS)[0]
    assert verdict(_version(db, "segmenter", 5, test_dice_per_slice=0.9), unmeasured_current, FLOORS)[0]
    measured = _version(db, "segmenter", 6, test_dice_per_slice=0.95)
    assert not verdict(_version(db, "segmenter", 7, test_dice_per_slice=0.9), measured, FLOORS)[0]  # worse
    assert verdict(_version(db, "scorer", 1, test_fpr_at_threshold=0.05), None, FLOORS)[0]
    assert not verdict(_version(db, "scorer", 2, test_fpr_at_threshold=0.5), None, FLOORS)[0]


def test_a_nan_metric_is_stored_as_unmeasured(db: Session, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A held-out Dice of NaN (no liver on the held-out slices) made PostgreSQL refuse the row (JSON has no
    NaN), so the training job failed after training; it is stored as no measurement."""
    source = tmp_path / "segmenter.pt"
    source.write_bytes(b"weights")
    row = registry.register(session=db, models_dir=tmp_path / "registry", kind="segmenter", source=source,
                            metrics={"test_dice_per_slice": float("nan"), "steps": 2}, card={"kind": "segmenter"},
                            actor="t")  # fmt: skip
    db.flush()
    db.refresh(row)
    assert row.metrics["test_dice_per_slice"] is None and registry.UNMEASURED in row.metrics

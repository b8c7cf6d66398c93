"""The model registry: register a trained file, promote (by hand or behind a gate), roll back.

A version is a file under ``models_dir`` with its sha256, metrics and model card.
Exactly one version per kind is promoted; a series pins the promoted versions when
its scoring starts, so a promotion never changes a series already in flight.
"""

from __future__ import annotations

import math
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.core.errors import Conflict, NotFound
from app.db import model_versions
from app.db.states import ModelStatus
from app.db.tables import ModelVersion
from app.services import audit
from app.services.storage import file_sha256

KINDS = ("scorer", "segmenter")
# Gate metric per kind and whether higher is better; measured on the frozen test split.
GATE = {"segmenter": ("test_dice_per_slice", True), "scorer": ("test_fpr_at_threshold", False)}
UNMEASURED = "unmeasured"  # metrics key of a version without its gate metric (registered by hand, say)


class ModelNotFound(NotFound):
    pass


class RegistryError(Conflict):
    pass


def register(
    *, session: Session, models_dir: Path, kind: str, source: Path, metrics: dict[str, Any], card: dict[str, Any],
    actor: str, training_job_id: int | None = None,
) -> ModelVersion:  # fmt: skip
    """Copy a trained file into the registry (atomically) and record it as a candidate.

    ``card`` is the file's model card (``workers.training.model_card.checked_card``): the caller builds
    it, so the registry needs no knowledge of checkpoint formats."""
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")
    if card.get("kind") != kind:
        raise RegistryError(f"{source.name} is a {card.get('kind')} checkpoint, not a {kind}")
    sha = file_sha256(source)
    version = model_versions.next_version(session, kind)
    models_dir.mkdir(parents=True, exist_ok=True)
    name = f"{kind}-v{version}-{sha[:12]}.pt"
    tmp = models_dir / f".{name}.tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, models_dir / name)
    # JSON has no NaN (PostgreSQL refuses it): a metric that is not a number is not a measurement.
    metrics = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    metric = GATE[kind][0]
    if _number(metrics.get(metric)) is None:  # never compared as if it had been measured
        metrics = {**metrics, UNMEASURED: f"no {metric} on the frozen test split"}
    row = ModelVersion(kind=kind, version=version, path=name, sha256=sha, metrics=metrics,
                       card={**card, "sha256": sha}, training_job_id=training_job_id)  # fmt: skip
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action="model.registered", entity_type="model", entity_id=row.id,
                 kind=kind, version=version, sha256=sha)  # fmt: skip
    return row


def _get(session: Session, model_id: int) -> ModelVersion:
    row = session.get(ModelVersion, model_id)
    if row is None:
        raise ModelNotFound(f"no model version {model_id}")
    return row


def promote(*, session: Session, model_id: int, actor: str, action: str = "model.promoted") -> ModelVersion:
    row = _get(session, model_id)
    current = model_versions.promoted(session, row.kind)
    if current is not None and current.id != row.id:
        current.status = ModelStatus.RETIRED
    row.status, row.promoted_at = ModelStatus.PROMOTED, datetime.now(UTC)
    audit.record(session, actor=actor, action=action, entity_type="model", entity_id=row.id, kind=row.kind,
                 version=row.version, previous=current.id if current else None)  # fmt: skip
    return row


def rollback(*, session: Session, kind: str, actor: str) -> ModelVersion:
    """Promote again the version that was promoted before the current one."""
    current = model_versions.promoted(session, kind)
    if current is None:
        raise RegistryError(f"no promoted {kind} to roll back")
    previous = model_versions.previously_promoted(session, kind, current.id)
    if previous is None:
        raise RegistryError(f"no earlier promoted {kind} to roll back to")
    promoted = promote(session=session, model_id=previous.id, actor=actor, action="model.rolled_back")
    current.status = ModelStatus.ROLLED_BACK
    return promoted


def gate_verdict(candidate: ModelVersion, current: ModelVersion | None, floors: dict[str, float]) -> tuple[bool, str]:
    """May ``candidate`` replace ``current`` without a person deciding? (verdict, reason in words).

    Never without its own gate metric on the frozen test split, never beyond the kind's absolute floor
    (``floors[kind]``), and never worse than a measured current version. An unmeasured current version
    cannot be compared: the floor alone decides (a Dice-0 model once replaced one that had no metric).
    """
    metric, higher = GATE[candidate.kind]
    value = _number(candidate.metrics.get(metric))
    if value is None:
        return False, f"the candidate has no {metric} on the frozen test split"
    floor = floors[candidate.kind]
    if (value < floor) if higher else (value > floor):
        return False, f"{metric} {value:.4g} is {'below' if higher else 'above'} the floor {floor:g}"
    old = _number(current.metrics.get(metric)) if current is not None else None
    if old is None:
        return True, f"{metric} {value:.4g} passes the floor {floor:g}; no measured current version to compare"
    if (value < old) if higher else (value > old):
        return False, f"{metric} {value:.4g} is worse than the current version's {old:.4g}"
    return True, f"{metric} {value:.4g}, not worse than the current version's {old:.4g}"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def verify_file(models_dir: Path, row: ModelVersion) -> None:
    """Raise RegistryError if the file is missing or its sha256 differs (corrupt)."""
    path = models_dir / row.path
    if not path.is_file():
        raise RegistryError(f"{row.kind} v{row.version}: file missing")
    if file_sha256(path) != row.sha256:
        raise RegistryError(f"{row.kind} v{row.version}: sha256 mismatch (corrupt file)")

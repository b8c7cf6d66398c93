"""SQL for the model registry."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.states import ModelStatus
from app.db.tables import ModelVersion


def promoted(session: Session, kind: str) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.kind == kind, ModelVersion.status == ModelStatus.PROMOTED)
    )


def next_version(session: Session, kind: str) -> int:
    return (
        int(
            session.scalar(select(func.coalesce(func.max(ModelVersion.version), 0)).where(ModelVersion.kind == kind))
            or 0
        )
        + 1
    )


def previously_promoted(session: Session, kind: str, exclude_id: int) -> ModelVersion | None:
    """The last version of this kind that was promoted before, other than exclude_id."""
    return session.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.kind == kind,
            ModelVersion.id != exclude_id,
            ModelVersion.promoted_at.is_not(None),
            ModelVersion.status == ModelStatus.RETIRED,
        )  # fmt: skip
        .order_by(ModelVersion.promoted_at.desc())
        .limit(1)
    )


def list_versions(session: Session, kind: str | None) -> list[ModelVersion]:
    stmt = select(ModelVersion).order_by(ModelVersion.kind, ModelVersion.version)
    if kind:
        stmt = stmt.where(ModelVersion.kind == kind)
    return list(session.scalars(stmt))

"""Append-only audit events. Detail carries ids and counts, never PHI."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.db.tables import AuditEvent


def record(
    session: Session, *, actor: str, action: str, entity_type: str, entity_id: object = None, **detail: Any
) -> None:
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            entity_type=entity_type,
            entity_id=None if entity_id is None else str(entity_id),
            detail=detail,
        )
    )

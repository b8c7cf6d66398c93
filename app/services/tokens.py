"""Bearer tokens for operators: create, list and revoke, each audited with the token's name (never its secret
or hash). The CLI (``gatekeeper token``) and the admin API (``/tokens``) both call these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.errors import Conflict, NotFound
from app.core.security import Role, create_token
from app.db.rows import affected
from app.db.tables import ApiToken
from app.services import audit


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value if value.tzinfo else value.replace(tzinfo=UTC)


def state(token: ApiToken, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    if token.revoked_at is not None:
        return "revoked"
    expires = _aware(token.expires_at)
    return "expired" if expires is not None and expires <= now else "active"


def describe(token: ApiToken) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return None if value is None else _aware(value).isoformat()  # type: ignore[union-attr]

    return {"id": token.id, "name": token.name, "role": token.role, "state": state(token),
            "created_at": iso(token.created_at), "expires_at": iso(token.expires_at),
            "revoked_at": iso(token.revoked_at)}  # fmt: skip


def issue(
    session: Session, *, role: Role, name: str | None, ttl_days: float | None, actor: str
) -> tuple[str, ApiToken]:
    secret, row = create_token(session, role=role, name=name, ttl_days=ttl_days)
    audit.record(session, actor=actor, action="token.created", entity_type="api_token", entity_id=row.id,
                 name=row.name, role=row.role, expires_at=describe(row)["expires_at"])  # fmt: skip
    return secret, row


def list_tokens(session: Session, *, include_revoked: bool = True) -> list[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(stmt))


def revoke(session: Session, *, token_id: int, actor: str) -> ApiToken:
    """Revoke at once (every process checks each request against the database); 409 if already revoked."""
    now = datetime.now(UTC)
    done = affected(session, update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=now))  # fmt: skip
    row = session.get(ApiToken, token_id, populate_existing=True)
    if row is None:
        raise NotFound(f"no token with id {token_id}")
    if not done:
        raise Conflict(f"token {token_id} ({row.name}) is already revoked")
    audit.record(session, actor=actor, action="token.revoked", entity_type="api_token", entity_id=row.id,
                 name=row.name, role=row.role)  # fmt: skip
    return row

"""Bearer tokens and roles. Secrets are stored as sha256 only."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import ApiToken


class Role(StrEnum):
    PACS = "pacs"
    RADIOLOGIST = "radiologist"
    ML_ENGINEER = "ml_engineer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, *, role: Role, name: str, ttl_days: float | None = None) -> str:
    """Store a new token's hash; return the secret (shown once)."""
    secret = f"gk_{secrets.token_urlsafe(32)}"
    expires = datetime.now(UTC) + timedelta(days=ttl_days) if ttl_days else None
    session.add(ApiToken(name=name, role=role.value, token_hash=hash_token(secret), expires_at=expires))
    return secret


_CACHE: dict[str, tuple[Principal, float]] = {}
_CACHE_MAX = 4096


def authenticate_cached(session_factory, secret: str, *, bootstrap_admin: str | None, ttl_s: float) -> Principal | None:  # type: ignore[no-untyped-def]
    """``authenticate`` with a short per-process cache of valid tokens (a database round trip per request
    otherwise). A revocation or expiry takes effect within ``ttl_s``; unknown tokens are never cached."""
    key = hash_token(secret)
    hit = _CACHE.get(key)
    now = time.monotonic()
    if hit is not None and hit[1] > now:
        return hit[0]
    with session_factory() as session:
        principal = authenticate(session, secret, bootstrap_admin=bootstrap_admin)
    if principal is not None and ttl_s > 0:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = (principal, now + ttl_s)
    return principal


def authenticate(session: Session, secret: str, *, bootstrap_admin: str | None) -> Principal | None:
    """The principal for a secret, or None when unknown, revoked or expired."""
    if bootstrap_admin and hmac.compare_digest(secret, bootstrap_admin):
        return Principal(name="bootstrap-admin", role=Role.ADMIN)
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None:
        expires = token.expires_at if token.expires_at.tzinfo else token.expires_at.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            return None
    return Principal(name=f"{token.role}:{token.name}", role=Role(token.role))

"""Bearer tokens and roles. Secrets are stored as sha256 only.

Every request is checked against the database (one indexed lookup): no process keeps a token it has seen,
so a revocation holds on the very next request in every process. (A per-process cache of valid tokens
once kept a revoked token working for up to 10 s.)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Conflict, DomainError
from app.db.tables import ApiToken


class Role(StrEnum):
    PACS = "pacs"
    RADIOLOGIST = "radiologist"
    ML_ENGINEER = "ml_engineer"
    ADMIN = "admin"
    MONITORING = "monitoring"  # Prometheus: GET /metrics and nothing else


@dataclass(frozen=True)
class Principal:
    name: str  # "<role>:<token name>": the actor of every audit event
    role: Role
    token_id: int | None = None  # None for the bootstrap token


BOOTSTRAP_NAME = "bootstrap-admin"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED_NAMES = frozenset({"default", BOOTSTRAP_NAME})
BOOTSTRAP_MIN_LENGTH = 32
BOOTSTRAP_MIN_DISTINCT = 12


class InvalidTokenName(DomainError):
    pass


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidTokenName("a token name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if name.lower() in RESERVED_NAMES:
        raise InvalidTokenName(f"the name {name!r} is reserved: choose one that says whose token it is")
    return name


def generated_name(role: Role) -> str:
    return f"{role.value}-{secrets.token_hex(4)}"


def create_token(
    session: Session, *, role: Role, name: str | None, ttl_days: float | None = None
) -> tuple[str, ApiToken]:
    """Store a new token's hash; return the secret (shown once) and the row. ``name`` None: one is generated.
    Two active (unrevoked) tokens never share a name: each name is one identity in the audit."""
    name = check_name(name) if name is not None else generated_name(role)
    taken = session.scalar(select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))
    if taken is not None:
        raise Conflict(f"an active token is already named {name!r} (id {taken}); revoke it or choose another name")
    secret = f"gk_{secrets.token_urlsafe(32)}"
    expires = datetime.now(UTC) + timedelta(days=ttl_days) if ttl_days else None
    row = ApiToken(name=name, role=role.value, token_hash=hash_token(secret), expires_at=expires)
    session.add(row)
    session.flush()
    return secret, row


def bootstrap_problem(settings: Settings) -> str | None:
    """Why the configured bootstrap admin token may not be used (None: usable or unset). Never quotes it."""
    secret = settings.bootstrap_admin_token
    if not secret:
        return None
    if len(secret) < BOOTSTRAP_MIN_LENGTH or len(set(secret)) < BOOTSTRAP_MIN_DISTINCT:
        return (f"GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN is too weak: at least {BOOTSTRAP_MIN_LENGTH} characters and "
                f"{BOOTSTRAP_MIN_DISTINCT} distinct ones (python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')")  # fmt: skip
    if settings.bootstrap_admin_token_expires is None:
        return (
            "GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN needs GATEKEEPER_BOOTSTRAP_ADMIN_TOKEN_EXPIRES (ISO 8601, UTC if naive)"
        )
    return None


def _bootstrap(settings: Settings, secret: str) -> Principal | None:
    configured = settings.bootstrap_admin_token
    if not configured or not hmac.compare_digest(secret.encode(), configured.encode()):
        return None
    expires = settings.bootstrap_admin_token_expires
    if bootstrap_problem(settings) is not None or expires is None or _aware(expires) <= datetime.now(UTC):
        return None
    return Principal(name=BOOTSTRAP_NAME, role=Role.ADMIN)


def authenticate(session: Session, secret: str, settings: Settings) -> Principal | None:
    """The principal for a secret, or None when unknown, revoked or expired."""
    bootstrap = _bootstrap(settings, secret)
    if bootstrap is not None:
        return bootstrap
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None and _aware(token.expires_at) <= datetime.now(UTC):
        return None
    try:
        role = Role(token.role)
    except ValueError:
        return None
    return Principal(name=f"{token.role}:{token.name}", role=role, token_id=token.id)

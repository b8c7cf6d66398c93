"""Browser sessions: a valid bearer token, typed once at ``/ui/login``, starts a session held in a cookie.

Only the cookie's sha256 is stored. Each request re-reads the session with its token (one indexed join), so
revoking or expiring the token ends every session started from it on the very next request, in every
process, as for the token itself. Each session has its own CSRF token: pages put it in a hidden form field,
scripts in the ``X-CSRF-Token`` header, and the server checks it on every request that changes state.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Invalid
from app.core.security import Principal, Role, authenticate, hash_token
from app.db import ui_sessions
from app.db.tables import ApiToken
from app.services import audit

SESSION_COOKIE = "gk_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginRefused(Invalid):
    pass


@dataclass(frozen=True)
class BrowserSession:
    principal: Principal
    csrf_token: str
    expires_at: datetime


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _principal_of(token: ApiToken) -> Principal:
    return Principal(name=f"{token.role}:{token.name}", role=Role(token.role), token_id=token.id)


def start(*, session: Session, secret: str, settings: Settings) -> tuple[str, BrowserSession] | None:
    """A new session for a valid token: (cookie value, session); None when the token is invalid."""
    principal = authenticate(session, secret, settings)
    if principal is None:
        return None
    if principal.token_id is None:
        raise LoginRefused("the bootstrap admin token cannot start a browser session: create an admin token "
                           "(gatekeeper token create --role admin) and log in with it")  # fmt: skip
    token = session.get(ApiToken, principal.token_id)
    assert token is not None
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=settings.ui_session_ttl_s)
    if token.expires_at is not None:  # a session never outlives its token
        expires = min(expires, _aware(token.expires_at))
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    ui_sessions.add(session, session_hash=hash_token(cookie), token_id=token.id, csrf_token=csrf, expires_at=expires)
    audit.record(session, actor=principal.name, action="ui.login", entity_type="token", entity_id=token.id)
    return cookie, BrowserSession(principal, csrf, expires)


def current(*, session: Session, cookie: str) -> BrowserSession | None:
    """The live session of a cookie, or None (unknown, logged out, expired, or its token revoked or expired)."""
    if not cookie:
        return None
    found = ui_sessions.live(session, session_hash=hash_token(cookie), now=datetime.now(UTC))
    if found is None:
        return None
    row, token = found
    try:
        principal = _principal_of(token)
    except ValueError:  # a role this version does not know
        return None
    return BrowserSession(principal, row.csrf_token, _aware(row.expires_at))


def end(*, session: Session, cookie: str, actor: str) -> None:
    if ui_sessions.end(session, session_hash=hash_token(cookie), now=datetime.now(UTC)):
        audit.record(session, actor=actor, action="ui.logout", entity_type="session")


def csrf_ok(browser: BrowserSession, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(presented.encode(), browser.csrf_token.encode())  # type: ignore[union-attr]

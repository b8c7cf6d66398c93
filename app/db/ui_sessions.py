"""SQL for browser sessions: one row per login, read with its token on every request."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.db.rows import affected
from app.db.tables import ApiToken, UiSession


def add(session: Session, *, session_hash: str, token_id: int, csrf_token: str, expires_at: datetime) -> UiSession:
    row = UiSession(session_hash=session_hash, token_id=token_id, csrf_token=csrf_token, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row


def live(session: Session, *, session_hash: str, now: datetime) -> tuple[UiSession, ApiToken] | None:
    """The session and its token, only while both hold: not ended or expired, the token not revoked or expired."""
    stmt = (
        select(UiSession, ApiToken)
        .join(ApiToken, ApiToken.id == UiSession.token_id)
        .where(UiSession.session_hash == session_hash, UiSession.ended_at.is_(None), UiSession.expires_at > now,
               ApiToken.revoked_at.is_(None), or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now))
    )  # fmt: skip
    found = session.execute(stmt).first()
    return None if found is None else (found[0], found[1])


def end(session: Session, *, session_hash: str, now: datetime) -> bool:
    stmt = update(UiSession).where(UiSession.session_hash == session_hash, UiSession.ended_at.is_(None))
    return affected(session, stmt.values(ended_at=now)) == 1

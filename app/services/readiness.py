"""Readiness: the database answers and the promoted scorer is present, intact and loadable.

Without a working scorer the service still ingests (every series goes to the
manual queue), but it is not ready to auto-route, and says so with 503.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.db import model_versions
from app.db.tables import AuditEvent
from app.services.storage import file_sha256


@lru_cache(maxsize=16)
def _sha_of(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(Path(path))


def scorer_problem(session: Session, models_dir: Path) -> str | None:
    """None when the promoted scorer is usable, else why not (no PHI, no paths)."""
    row = model_versions.promoted(session, "scorer")
    if row is None:
        return "no promoted scorer"
    path = models_dir / row.path
    try:
        stat = path.stat()
    except FileNotFoundError:
        return f"scorer v{row.version}: file missing"
    if _sha_of(str(path), stat.st_mtime_ns, stat.st_size) != row.sha256:
        return f"scorer v{row.version}: sha256 mismatch (corrupt file)"
    failed = session.scalar(
        select(AuditEvent.id).where(AuditEvent.action == "model.load_failed", AuditEvent.entity_id == str(row.id))
    )
    if failed is not None:
        return f"scorer v{row.version}: a worker failed to load it"
    return None


def check(session: Session, models_dir: Path) -> dict[str, str]:
    session.execute(text("SELECT 1"))
    problem = scorer_problem(session, models_dir)
    return {"database": "ok", "scorer": problem or "ok"}

"""Row counts of UPDATE / INSERT statements, typed (``Session.execute`` is typed as returning a plain Result)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Executable
from sqlalchemy.orm import Session


def affected(session: Session, statement: Executable) -> int:
    """Execute a DML statement and return how many rows it changed (the compare-and-set's answer)."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount

"""Row counts of UPDATE / INSERT statements, typed (``Session.execute`` is typed as returning a plain Result)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Executable
from sqlalchemy.orm import Session


def affected(session: Session, statement: Executable) -> int:
    """Execute a DML statement and return how many rows it changed (the compare-and-set's answer)."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def insert_ignore(session: Session, table: Any, values: dict[str, Any], keys: list[str]) -> bool:
    """INSERT ... ON CONFLICT (keys) DO NOTHING on either database; True when a row was inserted."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return bool(affected(session, insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)))

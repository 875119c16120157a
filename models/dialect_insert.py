"""INSERT ... ON CONFLICT for the store's dialect, whose module loads only when that dialect is used.

PostgreSQL's and SQLite's ``insert`` both take ``on_conflict_do_nothing``/``_do_update``; importing
PostgreSQL's dialect costs a SQLite process ~2 MB it never uses (issue 11: ``datasync sync``'s memory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert


def conflict_insert(dialect: str) -> Callable[[Any], PostgresInsert | SqliteInsert]:
    """``insert`` of ``dialect`` (by SQLAlchemy's name: ``postgresql``; anything else is SQLite)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgres_insert

        return postgres_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert

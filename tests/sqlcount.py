"""Count the SQL a block of code sends to a store: statements and transactions, per engine.

Shared by the store-path tests (bounds per dataset sync) and the benchmarks (figures per path).
Counted with SQLAlchemy's engine events, so it sees exactly what reaches the database driver;
``BEGIN`` issued by the SQLite begin hook is a transaction, not a statement.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, event


@dataclass
class SqlCount:
    statements: int = 0
    transactions: int = 0
    writing_transactions: int = 0
    texts: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _writing: set[int] = field(default_factory=set, repr=False)

    def _statement(self, connection: Connection, text: str) -> None:
        with self._lock:
            if text.lstrip().upper().startswith("BEGIN"):
                return
            self.statements += 1
            self.texts.append(text)
            if _writes(text):
                self._writing.add(id(connection))

    def _begin(self, connection: Connection) -> None:
        with self._lock:
            self.transactions += 1
            self._writing.discard(id(connection))

    def _end(self, connection: Connection) -> None:
        with self._lock:
            if id(connection) in self._writing:
                self.writing_transactions += 1
                self._writing.discard(id(connection))


# A data-modifying part of a ``WITH`` statement (PostgreSQL's one-statement start and 304 end)
_MODIFYING = re.compile(r"\b(INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b", re.IGNORECASE)


def _writes(text: str) -> bool:
    first = text.lstrip().split(None, 1)[0].upper()
    return first in ("INSERT", "UPDATE", "DELETE") or (first == "WITH" and _MODIFYING.search(text) is not None)


@contextlib.contextmanager
def counting(engine: Engine) -> Iterator[SqlCount]:
    """Count what ``engine`` runs inside the block (every thread of this process)."""
    count = SqlCount()

    def on_statement(connection: Connection, _cursor: Any, text: str, *_: Any) -> None:
        count._statement(connection, text)

    def on_begin(connection: Connection) -> None:
        count._begin(connection)

    def on_end(connection: Connection) -> None:
        count._end(connection)

    listeners = [
        ("before_cursor_execute", on_statement),
        ("begin", on_begin),
        ("commit", on_end),
        ("rollback", on_end),
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield count
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)

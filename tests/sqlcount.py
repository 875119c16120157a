"""Count the SQL a block of code sends to a store: statements and transactions, per engine.

Shared by the store-path tests (bounds per dataset sync) and the benchmarks (figures per path).
Counted with SQLAlchemy's engine events, so it sees exactly what reaches the database driver;
``BEGIN`` issued by the SQLite begin hook is a transaction, not a statement. The totals live in
shared memory: a process forked inside the block (``datasync sync --jobs N`` on SQLite runs whole
syncs in worker processes, ``worker.fetchers``) inherits the listeners and adds to the same totals.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, event

_STATEMENTS, _TRANSACTIONS, _WRITING, _WRITE_LOCKING = range(4)


@dataclass
class SqlCount:
    """The totals, and this process's statement texts. One process-shared lock guards both: a thread's
    lock held at a fork would stay held for ever in the child, a process-shared one is freed for both."""

    texts: list[str] = field(default_factory=list)  # this process's statements only
    _totals: Any = field(default_factory=lambda: multiprocessing.RawArray("q", 4), repr=False)
    _lock: Any = field(default_factory=multiprocessing.Lock, repr=False)
    _writing: set[int] = field(default_factory=set, repr=False)

    @property
    def statements(self) -> int:
        return int(self._totals[_STATEMENTS])

    @property
    def transactions(self) -> int:
        return int(self._totals[_TRANSACTIONS])

    @property
    def writing_transactions(self) -> int:
        return int(self._totals[_WRITING])

    @property
    def write_locking_transactions(self) -> int:
        """Transactions that began by taking SQLite's write lock (``BEGIN IMMEDIATE``/``EXCLUSIVE``), reads included."""
        return int(self._totals[_WRITE_LOCKING])

    def reset(self) -> None:
        """Start again from nothing: what follows is counted alone."""
        with self._lock:
            self._totals[:] = [0] * len(self._totals)
            self.texts.clear()

    def _statement(self, connection: Connection, text: str) -> None:
        with self._lock:
            if text.lstrip().upper().startswith("BEGIN"):
                if text.lstrip().upper().startswith(("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")):
                    self._totals[_WRITE_LOCKING] += 1
                return
            self._totals[_STATEMENTS] += 1
            self.texts.append(text)
            if _writes(text):
                self._writing.add(id(connection))

    def _begin(self, connection: Connection) -> None:
        with self._lock:
            self._totals[_TRANSACTIONS] += 1
            self._writing.discard(id(connection))

    def _end(self, connection: Connection) -> None:
        with self._lock:
            if id(connection) in self._writing:
                self._totals[_WRITING] += 1
                self._writing.discard(id(connection))


# A data-modifying part of a ``WITH`` statement (PostgreSQL's one-statement start and 304 end)
_MODIFYING = re.compile(r"\b(INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b", re.IGNORECASE)


def _writes(text: str) -> bool:
    first = text.lstrip().split(None, 1)[0].upper()
    return first in ("INSERT", "UPDATE", "DELETE") or (first == "WITH" and _MODIFYING.search(text) is not None)


@contextlib.contextmanager
def counting(engine: Engine) -> Iterator[SqlCount]:
    """Count what ``engine`` runs inside the block (every thread of this process and of processes it forks)."""
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

"""A process forked from one holding a SQLite connection still locks the store (issue 7).

``datasync run`` forks Celery's embedded beat after checking the store; beat closes every inherited
descriptor (``celery.platforms.close_open_fds``) and then writes its heartbeat. Before
``models.db.close_sqlite_connections`` ran at fork, SQLite's inherited lock bookkeeping sent that
write lock to a descriptor that no longer was the ``-shm`` file, and beat's commits overwrote
the workers'.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sqlite3
from pathlib import Path
from typing import NoReturn

from celery.platforms import close_open_fds
from sqlalchemy import text

from models.db import get_engine

WAIT_SECONDS = 60


def test_a_forked_child_that_closes_inherited_descriptors_still_takes_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    with get_engine(url).begin() as connection:  # leaves a pooled WAL connection open, as check_store does
        connection.execute(text("CREATE TABLE marks (writer TEXT)"))
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    child = os.fork()
    if child == 0:
        _hold_a_write_then_commit(url, ready_write, go_read)
    os.close(ready_write)
    os.close(go_read)
    began = select.select([ready_read], [], [], WAIT_SECONDS)[0]
    try:
        assert began, "the forked child never began its write"
        assert os.read(ready_read, 1) == b"w", "the forked child could not lock the store to write"
        assert _is_write_locked(path), "a second writer got in while the forked child held the write lock"
    finally:
        if not began:
            os.kill(child, signal.SIGKILL)
        with contextlib.suppress(BrokenPipeError):  # the child may have failed already
            os.write(go_write, b"g")
        _, status = os.waitpid(child, 0)
        os.close(ready_read)
        os.close(go_write)
    assert os.waitstatus_to_exitcode(status) == 0
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("SELECT writer FROM marks").fetchall() == [("child",)]
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _hold_a_write_then_commit(url: str, ready: int, go: int) -> NoReturn:
    """The child: like beat, close what was inherited, then write through a connection of its own."""
    code = 1
    try:
        close_open_fds([0, 1, 2, ready, go])
        with get_engine(url).begin() as connection:
            connection.execute(text("INSERT INTO marks VALUES ('child')"))
            os.write(ready, b"w")
            select.select([go], [], [], WAIT_SECONDS)
        code = 0
    finally:
        os._exit(code)


def _is_write_locked(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    else:
        probe.execute("ROLLBACK")
        return False
    finally:
        probe.close()

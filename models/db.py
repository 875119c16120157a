"""Engines, sessions and migrations for the store (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Dialect, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from models.datasets import DATASYNC_TABLE, DatasetTable

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
READING = "datasync_reading"  # execution option of read-only sessions (``reading``): no write lock on SQLite


_engines: dict[tuple[str, int], Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """One engine per URL per process: a forked worker never reuses its parent's connections."""
    key = (url, os.getpid())
    with _engines_lock:
        if key not in _engines:
            _engines[key] = _create_engine(url)
        return _engines[key]


def close_sqlite_connections() -> None:
    """Close this process's idle SQLite connections; runs before every ``fork()``.

    SQLite keeps each process's file locks in in-memory bookkeeping that a forked child inherits
    without the locks themselves. Celery's embedded beat then closes every inherited descriptor and
    writes its heartbeat: its WAL locks landed on whatever file reused the old ``-shm`` descriptor,
    so its commits raced the workers' and overwrote them. Nothing open at fork, nothing inherited.
    """
    with _engines_lock:
        mine = [engine for (_, pid), engine in _engines.items() if pid == os.getpid()]
    for engine in mine:
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            engine.dispose()


os.register_at_fork(before=close_sqlite_connections)


SQLITE_BUSY_SECONDS = 30  # how long a writer waits for SQLite's write lock (another thread's or process's)


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        factory = _serialised_connection(threading.Lock())
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS, "factory": factory})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        _connection_classes[engine] = factory
        return engine
    engine = create_engine(url)
    event.listen(engine.pool, "checkin", _note_idle_since)
    event.listen(engine.pool, "checkout", functools.partial(_ping_if_idle, engine.dialect))
    return engine


# A pooled connection idle longer than this is pinged before use (a server restart or an idle
# timeout may have closed it); one back in the pool for less is used at once, which saves a sync
# two round trips. A connection that died within that second fails its first statement, which
# invalidates the pool as any disconnect does.
PING_AFTER_IDLE_SECONDS = 1.0
IDLE_SINCE = "datasync_idle_since"


def _note_idle_since(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info[IDLE_SINCE] = time.monotonic()


def _ping_if_idle(dialect: Dialect, dbapi_connection: Any, record: Any, _proxy: object) -> None:
    idle_since = record.info.pop(IDLE_SINCE, None)
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return  # just connected, or just used
    try:
        dialect.do_ping(dbapi_connection)
    except dialect.loaded_dbapi.Error as error:
        if dialect.is_disconnect(error, dbapi_connection, None):
            raise DisconnectionError() from error  # the pool connects afresh and tries again
        raise


class _SerialisedConnection(sqlite3.Connection):
    """A SQLite connection whose writing transactions queue on a lock shared by the engine's connections.

    SQLite's busy handler polls: a writer finding the lock taken sleeps 1, 2, 5, 10... ms before it
    looks again, though another thread's transaction frees it within a millisecond. Threads of one
    process queue on this lock instead and each starts the moment the last commits; so do the
    processes forked while ``ForkedWriters`` is open, on its lock after the engine's; other processes
    still meet the busy handler. Taken at ``BEGIN IMMEDIATE``, freed by whatever ends the transaction.
    The queue only saves the polling: SQLite's own lock still decides who writes.
    """

    write_lock: threading.Lock  # one per engine (``_serialised_connection``)
    holds_write_lock = False
    holds_forks_lock: int | None = None  # the ``ForkedWriters`` file this connection's transaction locked

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the engine's write lock from here to the end of the transaction the block begins."""
        if not self.write_lock.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise sqlite3.OperationalError("database is locked (by another thread of this process)")
        self.holds_write_lock = True
        try:
            if (forks_lock := ForkedWriters.lock_file) is not None:
                fcntl.lockf(forks_lock, fcntl.LOCK_EX)  # the kernel wakes the next writer the moment it is free
                self.holds_forks_lock = forks_lock
            yield
        except BaseException:
            self._free_write_lock()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._free_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._free_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._free_write_lock()

    def _free_write_lock(self) -> None:
        if self.holds_write_lock:
            self.holds_write_lock = False
            if self.holds_forks_lock is not None:
                forks_lock, self.holds_forks_lock = self.holds_forks_lock, None
                with contextlib.suppress(OSError):  # closed with its ``ForkedWriters``: nothing is held
                    fcntl.lockf(forks_lock, fcntl.LOCK_UN)
            self.write_lock.release()


class ForkedWriters:
    """While open, SQLite writers of this process and of every process it forks queue on one lock.

    An fcntl lock on an unlinked file that all of them hold open from the fork on: the kernel hands
    it to the next waiting process the moment a transaction ends, and frees it when a holder dies.
    Such locks belong to a process, not a thread: each process's threads queue on their engine's
    lock first (one store per run: two engines of one process would share this one lock).
    """

    lock_file: int | None = None  # the open one's descriptor, inherited by the processes forked meanwhile

    def __init__(self) -> None:
        descriptor, path = tempfile.mkstemp(prefix="datasync-writers-")
        os.unlink(path)
        self._outer = ForkedWriters.lock_file  # one opened while another is: the outer one's again at close
        self._descriptor = ForkedWriters.lock_file = descriptor

    def close(self) -> None:
        ForkedWriters.lock_file = self._outer
        os.close(self._descriptor)


def _serialised_connection(lock: threading.Lock) -> type[_SerialisedConnection]:
    """The connection class for one engine: its connections share ``lock``."""
    return type("SerialisedConnection", (_SerialisedConnection,), {"write_lock": lock})


_connection_classes: dict[Engine, type[_SerialisedConnection]] = {}  # each SQLite engine's (``_create_engine``)


def adopt_after_fork(engine: Engine) -> None:
    """Make an engine inherited at a fork this process's own, in the forked process: a pool without the
    parent's connections (left open: they are the parent's) and, on SQLite, a write lock no thread of the
    parent can have held at the fork. Its compiled statements stay, which a new engine would compile again."""
    engine.dispose(close=False)
    if (connection_class := _connection_classes.get(engine)) is not None:
        connection_class.write_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # WAL keeps the file consistent for readers from other processes while a writer commits;
    # busy_timeout makes concurrent workers queue instead of failing with "database is locked".
    # synchronous=NORMAL: under WAL a commit no longer waits for an fsync (checkpoints still do),
    # and a transaction stays all or nothing; only a power cut may undo the last commits, which
    # the next sync redoes. A crashed or killed process loses nothing.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A writing transaction takes the write lock at BEGIN: one that reads first and then writes
    # fails with SQLITE_BUSY at once (no busy_timeout wait) when another writer got there between.
    # A reading one begins deferred, so under WAL it neither waits for nor holds the write lock.
    # Writers of this process queue on the engine's lock first (``_SerialisedConnection``).
    if connection.get_execution_options().get(READING, False):
        connection.exec_driver_sql("BEGIN")
        return
    with cast(_SerialisedConnection, connection.connection.dbapi_connection).writing():
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    """The engine behind a session factory: a sync's start and 304 end run on its Core connections."""
    bind: Engine = sessions.kw["bind"]  # session_factory binds an engine, never a connection
    return bind


@contextlib.contextmanager
def autocommitting(engine: Engine) -> Iterator[Connection]:
    """A connection on which every statement is its own transaction, committed as it ends: on PostgreSQL
    one statement then costs one round trip, without psycopg's ``BEGIN`` and ``COMMIT`` (a sync's start and
    a 304's end, each one statement). The block still counts as one transaction (``Connection.begin``)."""
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        with connection.begin():
            yield connection


def connection_of(executor: Session | Connection) -> Connection:
    """The Core connection a statement runs on: the given one, or the session's (its transaction)."""
    return executor if isinstance(executor, Connection) else executor.connection()


def reading(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """The same store's sessions for reads only (status, the API, health): on SQLite they never take
    the write lock, so a read proceeds while a sync writes. Never write through them."""
    bind = engine_of(sessions)
    if bind.get_execution_options().get(READING, False):
        return sessions
    return sessionmaker(**{**sessions.kw, "bind": bind.execution_options(**{READING: True})})


def session_factory(url: str, datasets: DatasetTable = DATASYNC_TABLE) -> sessionmaker[Session]:
    """Sessions on the store; each carries the profile's dataset table (``models.datasets.table_of``)."""
    return sessionmaker(get_engine(url), expire_on_commit=False, info={"dataset_table": datasets})


def alembic_config(url: str, datasets: DatasetTable = DATASYNC_TABLE) -> Config:
    from alembic.config import Config  # Alembic loads only where the schema is checked or migrated

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["store_profile"] = datasets.profile
    return config


def migrate(url: str, datasets: DatasetTable = DATASYNC_TABLE) -> None:
    """Bring the store's schema to the newest migration (safe to run any number of times).

    Under the ``checktick`` profile only datasync's bookkeeping tables are created; the
    platform's dataset table is never touched.
    """
    from alembic import command

    command.upgrade(alembic_config(url, datasets), "head")


def check_dataset_table(url: str, datasets: DatasetTable = DATASYNC_TABLE) -> None:
    """Raise ``StoreMismatch`` unless the dataset table takes every column datasync writes."""
    with get_engine(url).connect() as connection:
        datasets.check(connection)


# How the version files name themselves and their parent(s): read by ``head_revision``.
VERSION_TABLE = "alembic_version"
REVISION = re.compile(r"^revision\s*(?::\s*str\s*)?=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
DOWN_REVISION = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", re.MULTILINE)
QUOTED = re.compile(r"[\"']([^\"']+)[\"']")


def is_current(url: str) -> bool:
    """Whether the store is at the newest migration; read without Alembic, whose script loader would cost
    every command that opens a store about 10 MB and a tenth of a second."""
    with get_engine(url).connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return False
        stamped = set(connection.scalars(text(f"SELECT version_num FROM {VERSION_TABLE}")))
    return stamped == {head_revision()}


def head_revision() -> str:
    """The newest migration: the one revision no other names as its ``down_revision``."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = script.read_text()
        revisions.update(REVISION.findall(source))
        for names in DOWN_REVISION.findall(source):
            parents.update(QUOTED.findall(names))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations in {MIGRATIONS_DIR} have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()

"""Engines, sessions and migrations for the store (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
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


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


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
    reads_only = connection.get_execution_options().get(READING, False)
    connection.exec_driver_sql("BEGIN" if reads_only else "BEGIN IMMEDIATE")


def reading(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """The same store's sessions for reads only (status, the API, health): on SQLite they never take
    the write lock, so a read proceeds while a sync writes. Never write through them."""
    bind: Engine = sessions.kw["bind"]  # session_factory binds an engine, never a connection
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

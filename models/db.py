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


_engines: dict[tuple[str, int], Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """One engine per URL per process: a forked worker never reuses its parent's connections."""
    key = (url, os.getpid())
    with _engines_lock:
        if key not in _engines:
            _engines[key] = _create_engine(url)
        return _engines[key]


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # WAL keeps the file consistent for readers from other processes while a writer commits;
    # busy_timeout makes concurrent workers queue instead of failing with "database is locked".
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    # Take the write lock at BEGIN, so two processes never both read then fail to upgrade a lock.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


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

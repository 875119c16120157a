"""SQLite's begin mode: writers take the write lock at BEGIN, readers (``models.db.reading``) never do."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.db import get_engine, migrate, reading, session_factory
from models.schema import SyncState


@pytest.fixture
def store(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'begin.db'}"
    migrate(url)
    sessions = session_factory(url)
    with sessions.begin() as session:
        session.add(SyncState(dataset_key="k", paused=False, consecutive_failures=0))
    return sessions


def test_a_reader_proceeds_while_another_connection_holds_the_write_lock(store: sessionmaker[Session]) -> None:
    with store.begin() as writer:
        writer.execute(update(SyncState).values(paused=True))  # uncommitted: the write lock is held
        with reading(store)() as reader:
            assert reader.scalar(select(SyncState.paused)) is False  # the last committed state, at once
    with reading(store)() as reader:
        assert reader.scalar(select(SyncState.paused)) is True


def test_writers_still_take_the_write_lock_at_begin(store: sessionmaker[Session]) -> None:
    begins: list[str] = []
    engine = get_engine(str(store.kw["bind"].url))

    def seen(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with store.begin() as session:
            session.execute(select(SyncState.paused))
        with reading(store)() as session:
            session.execute(select(SyncState.paused))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]


def test_reading_keeps_the_store_profile_and_is_idempotent(store: sessionmaker[Session]) -> None:
    readers = reading(store)
    assert reading(readers) is readers
    assert readers.kw["info"] == store.kw["info"]

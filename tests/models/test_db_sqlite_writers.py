"""SQLite writers of one process queue on the engine's write lock, with real threads on a real file database.

The lock spares threads SQLite's polling busy handler; these tests pin what it must keep: writes stay
serialised and exact, every way a transaction ends frees the lock, and reads never wait for it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from models.db import _SerialisedConnection, get_engine, reading, session_factory

WAIT = 30  # generous bound on every wait for another thread: the machine is shared


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'writers.db'}"
    with get_engine(url).begin() as connection:
        connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"))
        connection.execute(text("INSERT INTO counter VALUES (1, 0)"))
    return url


def write_lock(engine: Engine) -> threading.Lock:
    with engine.connect() as connection:
        dbapi_connection = connection.connection.dbapi_connection
        assert isinstance(dbapi_connection, _SerialisedConnection)
        return dbapi_connection.write_lock


def counted(url: str) -> int:
    with get_engine(url).connect() as connection:
        return int(connection.execute(text("SELECT value FROM counter")).scalar_one())


def test_threads_writing_at_once_each_see_the_last_commit(url: str) -> None:
    """Read-then-write transactions from four threads lose no increment and none fails as locked."""
    engine, errors = get_engine(url), []

    def increment(times: int) -> None:
        try:
            for _ in range(times):
                with engine.begin() as connection:
                    value = connection.execute(text("SELECT value FROM counter")).scalar_one()
                    connection.execute(text("UPDATE counter SET value = :value"), {"value": value + 1})
        except Exception as error:  # a thread's failure must fail the test, not vanish with the thread
            errors.append(error)

    threads = [threading.Thread(target=increment, args=(50,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == [] and counted(url) == 200
    assert not write_lock(engine).locked()


def test_commit_rollback_and_a_failed_transaction_each_free_the_lock(url: str) -> None:
    engine = get_engine(url)
    lock = write_lock(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE counter SET value = 1"))
        assert lock.locked()
    assert not lock.locked()
    with engine.connect() as connection:
        connection.begin()
        connection.execute(text("UPDATE counter SET value = 2"))
        connection.rollback()
    assert not lock.locked()
    with pytest.raises(RuntimeError), engine.begin() as connection:
        connection.execute(text("UPDATE counter SET value = 3"))
        raise RuntimeError("a sync failing mid-write")
    assert not lock.locked() and counted(url) == 1


def test_a_waiting_writer_starts_when_the_holder_commits_and_readers_never_wait(url: str) -> None:
    sessions = session_factory(url)
    holding, release, written, read = threading.Event(), threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with sessions.begin() as session:
            session.execute(text("UPDATE counter SET value = 10"))
            holding.set()
            release.wait(WAIT)

    def writer() -> None:
        with sessions.begin() as session:
            session.execute(text("UPDATE counter SET value = value + 1"))
        written.set()

    def reader() -> None:
        with reading(sessions)() as session:
            session.execute(text("SELECT value FROM counter")).scalar_one()
        read.set()

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    assert holding.wait(WAIT)
    threads += [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads[1:]:
        thread.start()
    assert read.wait(WAIT)  # while the write lock is held
    assert not written.is_set()  # the second writer queues behind the first
    release.set()
    assert written.wait(WAIT)
    for thread in threads:
        thread.join(WAIT)
    assert counted(url) == 11

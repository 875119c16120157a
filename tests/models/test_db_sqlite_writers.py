"""SQLite writers of one process queue on the engine's write lock, and with ``ForkedWriters`` the processes
it forks on one lock too: real threads and forked processes on a real file database.

The locks spare writers SQLite's polling busy handler; these tests pin what they must keep: writes stay
serialised and exact, every way a transaction ends (a killed process included) frees the lock, and reads
never wait for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from models.db import ForkedWriters, _SerialisedConnection, adopt_after_fork, get_engine, reading, session_factory

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


@contextlib.contextmanager
def forked(engine: Engine, work: Callable[[], None]) -> Iterator[int]:
    """A forked process running ``work`` on ``engine``, adopted (``adopt_after_fork``); yields its pid, then
    waits for it (killed if the block failed) and fails unless it ended well or was killed."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            adopt_after_fork(engine)
            work()
            code = 0
        finally:
            os._exit(code)
    try:
        yield pid
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) in (0, -signal.SIGKILL)


@pytest.fixture
def shared(url: str) -> Iterator[Engine]:
    """The store's engine, with the writers of this process and the ones it forks queued on one lock."""
    writers = ForkedWriters()
    yield get_engine(url)
    writers.close()


def increment(engine: Engine, times: int) -> None:
    for _ in range(times):
        with engine.begin() as connection:
            value = connection.execute(text("SELECT value FROM counter")).scalar_one()
            connection.execute(text("UPDATE counter SET value = :value"), {"value": value + 1})


def test_forked_processes_writing_at_once_each_see_the_last_commit(shared: Engine, url: str) -> None:
    """Read-then-write transactions from two forked processes and this one lose no increment and none
    fails as locked (a child that fails exits non-zero, which fails ``forked``)."""
    with forked(shared, lambda: increment(shared, 50)), forked(shared, lambda: increment(shared, 50)):
        increment(shared, 50)
    assert counted(url) == 150


def holding_a_write(engine: Engine, held: int, go: int) -> Callable[[], None]:
    """A child's work: begin writing, tell ``held``, wait for ``go``, then commit."""

    def work() -> None:
        with engine.begin() as connection:
            connection.execute(text("UPDATE counter SET value = 7"))
            os.write(held, b"held")
            os.read(go, 1)

    return work


def test_a_forked_writers_transaction_holds_the_shared_lock_until_it_ends(shared: Engine, url: str) -> None:
    held_r, held_w = os.pipe()
    go_r, go_w = os.pipe()
    lock_file = ForkedWriters.lock_file
    assert lock_file is not None
    with forked(shared, holding_a_write(shared, held_w, go_r)):
        os.close(held_w)  # the child's copy only: a child that fails ends the read below
        assert os.read(held_r, 4) == b"held"
        with pytest.raises(OSError):  # another process holds it: this one's next writer would queue here
            fcntl.lockf(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(go_w, b"g")
    fcntl.lockf(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # freed by the commit
    fcntl.lockf(lock_file, fcntl.LOCK_UN)
    assert counted(url) == 7


def test_a_forked_writer_killed_mid_transaction_frees_the_lock_and_writes_nothing(shared: Engine, url: str) -> None:
    held_r, held_w = os.pipe()
    go_r, _go_w = os.pipe()  # never written: the child waits until it is killed
    with forked(shared, holding_a_write(shared, held_w, go_r)) as child:
        os.close(held_w)  # the child's copy only: a child that fails ends the read below
        assert os.read(held_r, 4) == b"held"
        os.kill(child, signal.SIGKILL)
    increment(shared, 1)  # the next writer gets in at once, and sees nothing of the killed transaction
    assert counted(url) == 1
    assert not write_lock(shared).locked()

"""Leases that live only as long as their holder: renewed while held, and dead syncs swept by the scan."""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import lease
from models.db import session_factory
from models.schema import SyncRun, SyncState
from models.types import utcnow

ROOT = Path(__file__).resolve().parents[2]


def expires_at(sessions: sessionmaker[Session], key: str):
    with sessions() as session:
        return session.scalar(select(SyncState.lease_expires_at).where(SyncState.dataset_key == key))


def add_running(sessions: sessionmaker[Session], key: str, worker: str) -> int:
    with sessions.begin() as session:
        run = SyncRun(dataset_key=key, trigger="schedule", status="running", started_at=utcnow(), worker=worker)
        session.add(run)
        session.flush()
        return run.id


def test_a_kept_lease_is_renewed_while_the_block_runs_and_released_after(sessions) -> None:
    assert lease.acquire(sessions, "nhs_trusts", "worker-a", 0.6)
    first = expires_at(sessions, "nhs_trusts")
    deadline = time.monotonic() + 10
    with lease.kept(sessions, "nhs_trusts", "worker-a", 0.6):
        while expires_at(sessions, "nhs_trusts") == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert expires_at(sessions, "nhs_trusts") > first  # renewed (every 0.2 s)
        time.sleep(1.0)  # longer than the TTL: still held, because it is renewed
        assert not lease.acquire(sessions, "nhs_trusts", "worker-b", 60)
    assert lease.acquire(sessions, "nhs_trusts", "worker-b", 60)


def test_renew_fails_for_a_lease_someone_else_holds(sessions) -> None:
    assert lease.acquire(sessions, "nhs_trusts", "worker-a", 60)
    assert lease.renew(sessions, "nhs_trusts", "worker-a", 60)
    assert not lease.renew(sessions, "nhs_trusts", "worker-b", 60)


def test_the_scan_closes_runs_whose_syncer_lost_its_lease_and_keeps_live_ones(sessions) -> None:
    assert lease.acquire(sessions, "live", "worker-live", 60)
    live = add_running(sessions, "live", "worker-live")
    assert lease.acquire(sessions, "dead", "worker-dead", -1)  # expired: its renewer died with it
    dead = add_running(sessions, "dead", "worker-dead")
    assert lease.acquire(sessions, "taken", "worker-new", 60)  # lease now held by a different process
    orphan = add_running(sessions, "taken", "worker-old")
    closed = lease.abandon_dead_runs(sessions)
    assert sorted(run.id for run in closed) == sorted([dead, orphan])
    with sessions() as session:
        runs = {run.id: run for run in session.scalars(select(SyncRun))}
    assert runs[live].status == "running"
    assert (runs[dead].status, runs[dead].error_kind) == ("failed", "abandoned")
    assert runs[dead].finished_at is not None
    assert lease.abandon_dead_runs(sessions) == []


def started(sessions: sessionmaker[Session], key: str, owner: str, ttl: float = 60) -> lease.Taken | None:
    """``take`` with a 'running' row, as a sync's start does, in a transaction of its own."""
    now = utcnow()
    running = {"dataset_key": key, "trigger": "cli", "status": "running", "started_at": now, "worker": owner}
    with sessions.begin() as session:
        return lease.take(session, key, owner, ttl, now, run=running)


def test_a_take_with_a_run_adds_it_with_the_lease_closes_stale_runs_and_a_held_lease_refuses(sessions) -> None:
    postgresql = sessions.kw["bind"].dialect.name == "postgresql"
    assert lease.acquire(sessions, "nhs_trusts", "worker-dead", -1)  # expired: its holder died mid-sync
    stale = add_running(sessions, "nhs_trusts", "worker-dead")
    taken = started(sessions, "nhs_trusts", "worker-a")
    assert taken is not None and taken.state.lease_owner == "worker-a" and not taken.row_stored
    assert (taken.run_id is not None) == postgresql  # PostgreSQL: in the statement that took the lease
    assert started(sessions, "nhs_trusts", "worker-b") is None  # held: refused, and no run row added
    with sessions() as session:
        runs = {run.id: run for run in session.scalars(select(SyncRun))}
        state = session.get_one(SyncState, "nhs_trusts")
    assert (runs[stale].status, runs[stale].error_kind) == ("failed", "abandoned")
    assert len(runs) == (2 if postgresql else 1)
    if taken.run_id is not None:
        assert (runs[taken.run_id].status, runs[taken.run_id].worker) == ("running", "worker-a")
    assert (state.lease_owner, state.lease_expires_at > utcnow()) == ("worker-a", True)


def test_leases_held_at_once_are_all_renewed_by_one_thread_and_a_stopped_one_no_more(sessions) -> None:
    keys = ["nhs_trusts", "ethnic_category", "icb_codes"]
    for key in keys:
        assert lease.acquire(sessions, key, "worker-a", 0.6)
    first = {key: expires_at(sessions, key) for key in keys}
    threads_before = threading.active_count()
    with contextlib.ExitStack() as held:
        renewals = [held.enter_context(lease.kept(sessions, key, "worker-a", 0.6)) for key in keys]
        assert threading.active_count() <= threads_before + 1  # at most the process's renewer, once
        deadline = time.monotonic() + 10
        while any(expires_at(sessions, key) == first[key] for key in keys) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(expires_at(sessions, key) > first[key] for key in keys)
        renewals[0].stop()
        stopped = expires_at(sessions, keys[0])
        deadline = time.monotonic() + 10
        while any(expires_at(sessions, key) <= stopped for key in keys[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(expires_at(sessions, key) > stopped for key in keys[1:])  # renewed since the stop
        assert expires_at(sessions, keys[0]) == stopped  # the stopped one was not


def _renew_in_a_forked_child(url: str, answer: Connection) -> None:
    faulthandler.dump_traceback_later(25, exit=True)  # a child stuck after the fork shows where, then ends
    try:
        sessions = session_factory(url)
        first = expires_at(sessions, "forked")
        with lease.kept(sessions, "forked", "worker-child", 0.6):
            deadline = time.monotonic() + 10
            while expires_at(sessions, "forked") == first and time.monotonic() < deadline:
                time.sleep(0.05)
            answer.send("renewed" if expires_at(sessions, "forked") > first else "not renewed")
    except BaseException as exc:
        answer.send(f"failed: {exc!r}")


def fork_a_renewing_child(url: str) -> str:
    """As a worker's main process forks a pool process, after its own renewer has started."""
    sessions = session_factory(url)
    with lease.kept(sessions, "nhs_trusts", "worker-parent", 60):  # the parent's renewer is running
        pass
    assert lease.acquire(sessions, "forked", "worker-child", 0.6)
    mine, theirs = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=_renew_in_a_forked_child, args=(url, theirs))
    child.start()
    answer = mine.recv() if mine.poll(30) else "no answer in 30 s"
    child.join(30)
    return f"{answer}, exit {child.exitcode}"


def test_a_forked_child_renews_its_leases_with_a_renewer_of_its_own(sessions) -> None:
    # In a fresh interpreter, as in a worker's main process: the test process's own threads (servers,
    # xdist) are not what a pool process is forked from.
    url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    script = "import sys; from tests.models.test_lease import fork_a_renewing_child as f; print(f(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", script, url], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.strip() == "renewed, exit 0", done.stdout + done.stderr[-3000:]


def test_the_lease_module_loads_no_postgresql_dialect_until_a_postgresql_store_uses_it() -> None:
    """A SQLite sync process never pays for PostgreSQL's dialect (~2 MB: issue 11's memory target)."""
    probe = "import sys, models.lease; print('sqlalchemy.dialects.postgresql' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False", loaded.stderr

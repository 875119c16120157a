"""Pruning sync_runs: old attempts go, what status and history point at stays."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.db import session_factory
from models.schema import DatasetVersion, SyncRun
from models.types import utcnow
from worker.runs import prune_runs

NOW = utcnow()
OLD = NOW - timedelta(days=200)


def add_run(session: Session, key: str, status: str, started_days_ago: float) -> SyncRun:
    started = NOW - timedelta(days=started_days_ago)
    run = SyncRun(dataset_key=key, trigger="schedule", status=status, started_at=started)
    if status != "running":
        run.finished_at = started
    session.add(run)
    session.flush()
    return run


def surviving(sessions: sessionmaker[Session]) -> set[tuple[str, str, int]]:
    with sessions() as session:
        runs = session.scalars(select(SyncRun))
        return {(run.dataset_key, run.status, (NOW - run.started_at).days) for run in runs}


def test_old_runs_go_but_the_last_run_and_runs_behind_versions_stay(store_url: str) -> None:
    sessions = session_factory(store_url)
    with sessions.begin() as session:
        created = add_run(session, "a", "created", 300)
        session.add(DatasetVersion(dataset_key="a", version=1, options={"1": "x"}, content_hash="h", run_id=created.id))
        add_run(session, "a", "failed", 250)
        add_run(session, "a", "unchanged", 220)  # a's newest finished run, old as it is
        add_run(session, "a", "skipped", 210)  # skips never count as the last run
        add_run(session, "a", "running", 205)  # abandoned by a worker long gone
        add_run(session, "b", "unchanged", 120)
        add_run(session, "b", "failed", 5)
        add_run(session, "b", "skipped", 1)
    deleted = prune_runs(sessions, NOW - timedelta(days=90), batch=2)
    assert deleted == 4
    assert surviving(sessions) == {
        ("a", "created", 300),
        ("a", "unchanged", 220),
        ("b", "failed", 5),
        ("b", "skipped", 1),
    }


def test_nothing_recent_is_pruned(store_url: str) -> None:
    sessions = session_factory(store_url)
    with sessions.begin() as session:
        for days in (1, 2, 3):
            add_run(session, "a", "failed", days)
    assert prune_runs(sessions, NOW - timedelta(days=90)) == 0
    assert len(surviving(sessions)) == 3

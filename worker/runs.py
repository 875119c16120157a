"""Bookkeeping shared by syncs, review actions and housekeeping: ``sync_runs`` rows and ``sync_state`` updates."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Subquery, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from models.schema import DatasetVersion, SyncRun, SyncState
from models.types import utcnow
from models.upsert import Snapshot, load_dataset
from worker.outcome import SyncOutcome

PRUNE_BATCH = 5_000


def latest_finished_runs() -> Subquery:
    """Each dataset's newest finished attempt (``dataset_key``, ``id``): the run status reports."""
    return (
        select(SyncRun.dataset_key, func.max(SyncRun.id).label("id"))
        .where(SyncRun.status.not_in(("running", "skipped")))
        .group_by(SyncRun.dataset_key)
        .subquery()
    )


def prune_runs(sessions: sessionmaker[Session], older_than: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete attempts started before ``older_than``; returns how many went.

    Small batches, each its own transaction, so syncs writing to the same store never wait long.
    Kept at any age: each dataset's newest finished run (status shows it) and every run that made
    a stored version (history links to it).
    """
    made_versions = select(DatasetVersion.run_id).where(DatasetVersion.run_id.is_not(None))
    prunable = (
        select(SyncRun.id)
        .where(
            SyncRun.started_at < older_than,
            SyncRun.id.not_in(select(latest_finished_runs().c.id)),
            SyncRun.id.not_in(made_versions),
        )
        .limit(batch)
    )
    deleted = 0
    while True:
        with sessions.begin() as session:
            ids = list(session.scalars(prunable))
            if not ids:
                return deleted
            session.execute(delete(SyncRun).where(SyncRun.id.in_(ids)))
        deleted += len(ids)


def start_run(
    sessions: sessionmaker[Session], key: str, trigger: str, worker: str, now: datetime, attempt: int = 1
) -> int:
    """A visible 'running' row, committed at once so monitoring sees syncs in flight."""
    with sessions.begin() as session:
        run = SyncRun(
            dataset_key=key, trigger=trigger, status="running", started_at=now, attempt=attempt, worker=worker[:255]
        )
        session.add(run)
        session.flush()
        return run.id


def record_skip(
    sessions: sessionmaker[Session],
    key: str,
    trigger: str,
    worker: str,
    kind: str,
    reason: str,
    status: str = "skipped",
    attempt: int = 1,
) -> SyncOutcome:
    """A run that ended before fetching anything (busy, fresh, paused, unknown key...)."""
    now = utcnow()
    with sessions.begin() as session:
        run = SyncRun(
            dataset_key=key,
            trigger=trigger,
            status=status,
            started_at=now,
            finished_at=now,
            duration_seconds=0.0,
            error_kind=kind,
            error_message=reason,
            worker=worker[:255],
            attempt=attempt,
        )
        session.add(run)
        session.flush()
        current = load_dataset(session, key)
        return SyncOutcome(
            key,
            status,
            current.version if current else None,
            len(current.options) if current else None,
            error_kind=kind,
            error=reason,
            run_id=run.id,
        )


def finish_run(
    session: Session,
    run_id: int,
    outcome: SyncOutcome,
    started: datetime,
    now: datetime,
    *,
    options_before: int | None,
    options_after: int | None = None,
) -> None:
    run = session.get_one(SyncRun, run_id)
    counts = outcome.diff.counts()
    run.status = outcome.status
    run.finished_at = now
    run.duration_seconds = (now - started).total_seconds()
    run.options_before = options_before
    run.options_after = outcome.options if options_after is None else options_after
    run.codes_added, run.codes_removed, run.codes_relabelled = counts["added"], counts["removed"], counts["relabelled"]
    run.version_after = outcome.version
    run.changes = None if outcome.diff.is_empty else outcome.diff.to_json()
    run.warnings = list(outcome.warnings)
    run.error_kind, run.error_message = outcome.error_kind, outcome.error
    run.will_retry = outcome.will_retry
    run.bytes_fetched = outcome.bytes_fetched


def finish_state(state: SyncState, status: str, now: datetime) -> None:
    state.last_attempt_at = now
    state.last_status = status
    if status in ("created", "updated", "unchanged"):
        state.last_success_at = now
        state.consecutive_failures = 0
    elif status == "failed":
        state.consecutive_failures += 1


def hold_change(state: SyncState, snapshot: Snapshot, reason: str, now: datetime) -> None:
    state.held_options = dict(snapshot.options)
    state.held_retired = list(snapshot.retired_codes)
    state.held_defaults = list(snapshot.default_codes)
    state.held_hash = snapshot.content_hash
    state.held_reason = reason
    state.held_at = now


def clear_hold(state: SyncState) -> None:
    state.held_options = state.held_retired = state.held_defaults = None
    state.held_hash = state.held_reason = state.held_at = None

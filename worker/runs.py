"""Bookkeeping shared by syncs, review actions and housekeeping: ``sync_runs`` rows and ``sync_state`` updates."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    String,
    Subquery,
    Update,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from models import lease
from models.datasets import DatasetTable, table_of_factory
from models.db import autocommitting, connection_of, engine_of
from models.lease import RUNS, STATES
from models.schema import DatasetVersion, SyncRun, SyncState
from models.types import utcnow
from models.upsert import Snapshot, load_dataset, stamp_verified, stamping_cte
from worker.outcome import SyncOutcome

PRUNE_BATCH = 5_000
# Built once, as every sync runs them: the columns to set come with the parameters.
_ADD_RUN = insert(RUNS).returning(RUNS.c.id)
_FINISH_RUN = update(RUNS).where(RUNS.c.id == bindparam("run_id"))
# A sync closes its run only while the row is still its own: see ``finish_run``.
_FINISH_OWN_RUN = _FINISH_RUN.where(RUNS.c.worker == bindparam("run_worker", type_=String()))
_FINISH_STATE = (
    update(STATES)
    .where(STATES.c.dataset_key == bindparam("state_key"))
    .values(lease.freeing(bindparam("lease_holder", type_=String())))
)
_FINISH_FAILED_STATE = _FINISH_STATE.values(consecutive_failures=STATES.c.consecutive_failures + 1)


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
        return add_running(session, key, trigger, worker, now, attempt)


def add_running(
    executor: Session | Connection, key: str, trigger: str, worker: str, now: datetime, attempt: int = 1
) -> int:
    """``start_run`` in the caller's transaction (a sync's start transaction, which commits at once)."""
    row = running_row(key, trigger, worker, now, attempt)
    run_id: int = connection_of(executor).execute(_ADD_RUN, row).scalar_one()
    return run_id


def running_row(key: str, trigger: str, worker: str, now: datetime, attempt: int = 1) -> dict[str, Any]:
    """A 'running' row's columns: what ``add_running`` inserts, or ``lease.take`` with the lease (its ``run``)."""
    return {
        "dataset_key": key,
        "trigger": trigger,
        "status": "running",
        "started_at": now,
        "attempt": attempt,
        "worker": own_name(worker),
    }


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
    with sessions.begin() as session:
        return add_skip(session, key, trigger, worker, kind, reason, status, attempt)


def add_skip(
    session: Session,
    key: str,
    trigger: str,
    worker: str,
    kind: str,
    reason: str,
    status: str = "skipped",
    attempt: int = 1,
    *,
    run_id: int | None = None,
) -> SyncOutcome:
    """``record_skip`` in the caller's transaction; given ``run_id`` (the 'running' row this transaction
    added with the lease: ``lease.Taken.run_id``), that row becomes the skip's record."""
    now = utcnow()
    ended = {"status": status, "finished_at": now, "duration_seconds": 0.0, "error_kind": kind, "error_message": reason}
    connection = session.connection()
    if run_id is None:
        row = running_row(key, trigger, worker, now, attempt) | ended
        run_id = connection.execute(_ADD_RUN, row).scalar_one()
    else:
        connection.execute(_FINISH_RUN, {"run_id": run_id, **ended})
    current = load_dataset(session, key)
    return SyncOutcome(
        key,
        status,
        current.version if current else None,
        len(current.options) if current else None,
        error_kind=kind,
        error=reason,
        run_id=run_id,
    )


def finish_run(
    executor: Session | Connection,
    run_id: int,
    outcome: SyncOutcome,
    started: datetime,
    now: datetime,
    *,
    options_before: int | None,
    options_after: int | None = None,
    worker: str | None = None,
) -> bool:
    """Close the run row: one UPDATE by id, without reading the row back first (Core, on the transaction's
    connection: the hot statements skip the ORM's per-statement bookkeeping). Given ``worker`` (a sync's
    lease owner, who started the run), only while the row is still that worker's; False when no row was
    closed. A PostgreSQL crash may lose a sync's start (its commit does not wait for the WAL flush) and
    give its id to another run: the sync must then not close that run (docs/architecture.md)."""
    finished = _finished(outcome, started, now)
    sizes = {
        "options_before": options_before,
        "options_after": outcome.options if options_after is None else options_after,
    }
    finished.update(sizes, version_after=outcome.version)
    statement, owner = (_FINISH_RUN, {}) if worker is None else (_FINISH_OWN_RUN, {"run_worker": own_name(worker)})
    result = connection_of(executor).execute(statement, {"run_id": run_id, **owner, **finished})
    return cast(CursorResult[Any], result).rowcount == 1


def own_name(worker: str) -> str:
    """A worker's name as its runs record it (``sync_runs.worker``)."""
    return worker[:255]


def _finished(outcome: SyncOutcome, started: datetime, now: datetime) -> dict[str, Any]:
    """The run row's columns for ``outcome``, but for the list's version and sizes (known only after the write)."""
    counts = outcome.diff.counts()
    return {
        "status": outcome.status,
        "finished_at": now,
        "duration_seconds": (now - started).total_seconds(),
        "codes_added": counts["added"],
        "codes_removed": counts["removed"],
        "codes_relabelled": counts["relabelled"],
        "changes": None if outcome.diff.is_empty else outcome.diff.to_json(),
        "warnings": list(outcome.warnings),
        "error_kind": outcome.error_kind,
        "error_message": outcome.error,
        "will_retry": outcome.will_retry,
        "bytes_fetched": outcome.bytes_fetched,
    }


def finish_unchanged(
    sessions: sessionmaker[Session], key: str, stamp_field: str, run: int, owner: str, started: datetime, reason: str
) -> SyncOutcome:
    """A 304's end transaction: move the stamp (``stamp_verified``), close the run as unchanged and
    record it in the state row, freeing the lease. On PostgreSQL that is one statement on a Core
    connection in autocommit (``_end_unchanged_at_once``); SQLite, which has no round trips to save, and
    a row the statement found nothing to stamp on, run the three statements in a session's transaction."""
    now, outcome = utcnow(), SyncOutcome(key, "unchanged", run_id=run, warnings=(reason,), bytes_fetched=0)
    engine = engine_of(sessions)
    if engine.dialect.name == "postgresql" and _end_unchanged_at_once(
        engine, table_of_factory(sessions), stamp_field, owner, started, now, outcome
    ):
        return outcome
    with sessions.begin() as session:
        verified = stamp_verified(session, key, stamp_field, now)
        outcome.version, outcome.options = (verified.version, verified.options) if verified else (None, None)
        finish_run(session, run, outcome, started, now, options_before=outcome.options, worker=owner)
        finish_state(session, key, owner, "unchanged", now)
    return outcome


def _end_unchanged_at_once(
    engine: Engine,
    datasets: DatasetTable,
    stamp_field: str,
    owner: str,
    started: datetime,
    now: datetime,
    outcome: SyncOutcome,
) -> bool:
    """``finish_unchanged`` as one statement, its own transaction (autocommit: no ``BEGIN`` and ``COMMIT``
    round trips), setting the outcome's version and size; False, with nothing written, when no row was
    stamped (the row is gone or people's: the caller's transaction reads it and says which)."""
    finished = {f"run_{name}": value for name, value in _finished(outcome, started, now).items()}
    key, run = outcome.key, outcome.run_id
    values = {"dataset": key, "now": now, "run_id": run, "state_key": key}
    values |= {"run_worker": own_name(owner), "lease_holder": owner}
    with autocommitting(engine) as connection:
        ending = _ending_unchanged(datasets, stamp_field)
        row = connection.execute(ending, {**values, **finished, **_recorded("unchanged", now)}).first()
    if row is None:
        return False
    outcome.version, outcome.options, _ = row
    return True


@functools.cache
def _ending_unchanged(table: DatasetTable, stamp_field: str) -> Update:
    """``finish_unchanged`` on PostgreSQL: ``WITH stamped AS (UPDATE <datasets> ... RETURNING version,
    codes), finished AS (UPDATE sync_runs ...) UPDATE sync_state ... RETURNING`` the stamped version
    and code count, and sets ``lease.NO_FLUSH_WAIT``. All three see one snapshot and commit together; the
    run and the state are written only if the row was stamped, so a row not stamped returns nothing."""
    stamped = stamping_cte(table, stamp_field)
    was_stamped = exists(stamped.select())
    version, codes = select(stamped.c.version).scalar_subquery(), select(stamped.c.codes).scalar_subquery()
    from_the_stamp = {"version_after": version, "options_before": codes, "options_after": codes}
    now = utcnow()  # any time: only the names of the columns are taken
    run_columns, state_columns = _finished(SyncOutcome("", "unchanged"), now, now), _recorded("unchanged", now)
    finished = (
        update(RUNS)
        .where(RUNS.c.id == bindparam("run_id"), RUNS.c.worker == bindparam("run_worker", type_=String()), was_stamped)
        .values({name: bindparam(f"run_{name}", type_=RUNS.c[name].type) for name in run_columns} | from_the_stamp)
        .cte("finished")
    )
    state = {name: bindparam(name, type_=STATES.c[name].type) for name in state_columns}
    ending = _FINISH_STATE.where(was_stamped).values(state).add_cte(stamped).add_cte(finished)
    return ending.returning(version, codes, lease.NO_FLUSH_WAIT)


def _recorded(status: str, now: datetime) -> dict[str, Any]:
    """The state columns every attempt sets: when and how it ended (and, for a success, that it was one)."""
    recorded: dict[str, Any] = {"last_attempt_at": now, "last_status": status}
    if status in ("created", "updated", "unchanged"):
        recorded.update(last_success_at=now, consecutive_failures=0)
    return recorded


def finish_state(
    executor: Session | Connection, key: str, owner: str, status: str, now: datetime, **values: Any
) -> None:
    """Record the attempt in the state row and free ``owner``'s lease: one UPDATE, the sync's last
    statement on ``sync_state``. ``values`` are further columns to set (validators, a hold)."""
    recorded = _recorded(status, now)
    statement = _FINISH_FAILED_STATE if status == "failed" else _FINISH_STATE
    connection_of(executor).execute(statement, {"state_key": key, "lease_holder": owner, **recorded, **values})


def hold_values(snapshot: Snapshot, reason: str, now: datetime) -> dict[str, Any]:
    """The state columns that keep a held change for review."""
    return {
        "held_options": dict(snapshot.options),
        "held_retired": list(snapshot.retired_codes),
        "held_defaults": list(snapshot.default_codes),
        "held_hash": snapshot.content_hash,
        "held_reason": reason,
        "held_at": now,
    }


NO_HOLD: dict[str, Any] = dict.fromkeys(
    ("held_options", "held_retired", "held_defaults", "held_hash", "held_reason", "held_at")
)


def clear_hold(state: SyncState) -> None:
    for name, value in NO_HOLD.items():
        setattr(state, name, value)

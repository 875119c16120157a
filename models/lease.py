"""A per-dataset lease in the store: at most one worker syncs a dataset at a time.

It lives in the database every worker already shares, so it holds whoever triggered the sync
(beat, a duplicate beat, a manual re-sync, the CLI) and needs no extra server. It is short and
renewed while the sync runs (:func:`kept`), so a worker killed mid-sync blocks its dataset for at
most one lease period, however long syncs may take.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Connection,
    CursorResult,
    Insert,
    Select,
    String,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.per_process import PerProcess
from models.datasets import DatasetTable, table_of
from models.db import reading
from models.dialect_insert import conflict_insert
from models.schema import Base, SyncRun, SyncState
from models.types import UTCDateTime, utcnow

log = logging.getLogger(__name__)
# Core tables for the statements every sync runs: the ORM's bulk-update path costs more than the SQL.
STATES, RUNS = Base.metadata.tables["sync_state"], Base.metadata.tables["sync_runs"]
ABANDONED = "the worker running this sync stopped before finishing (killed or crashed)"
# Bookkeeping whose loss in a PostgreSQL crash costs nothing but a repeated check commits without waiting
# for the WAL flush: ``SET LOCAL synchronous_commit = off`` as a function, for the statement's transaction
# only, set inside the statement (no round trip of its own). docs/architecture.md says which and why.
NO_FLUSH_WAIT = func.set_config("synchronous_commit", "off", True)
# Runs left 'running' by a worker that died: once we hold the lease they cannot be live.
_ABANDON_STALE_RUNS = (
    update(RUNS)
    .where(RUNS.c.dataset_key == bindparam("key"), RUNS.c.status == "running")
    .values(status="failed", finished_at=bindparam("now"), error_kind="abandoned", error_message=ABANDONED)
)


def ensure_state(session: Session, key: str) -> SyncState:
    """The state row for ``key``, created if missing, race-free on both dialects."""
    session.execute(
        conflict_insert(session.get_bind().dialect.name)(SyncState)
        .values(dataset_key=key, paused=False, consecutive_failures=0)
        .on_conflict_do_nothing(index_elements=["dataset_key"])
    )
    return session.get_one(SyncState, key, populate_existing=True)


@dataclass(frozen=True)
class Taken:
    """A lease just taken: the state row as it now is, whether the dataset's row is stored, and the
    'running' row the same statement added (``take``'s ``run``, PostgreSQL only; else None)."""

    state: SyncState
    row_stored: bool  # the stored validators describe a row that still exists
    run_id: int | None = None

    def started_at(self, now: datetime) -> datetime:
        """When the sync holding it started: ``now``, read before the lease was taken, or the previous
        holder's end if later (the take waited for that end's row lock), so runs never seem to overlap.
        The 'running' row ``take`` adds on PostgreSQL says the same (``_taking_and_starting``)."""
        ended = self.state.last_attempt_at
        return now if ended is None else max(now, ended)


def take(
    session: Session, key: str, owner: str, ttl_seconds: float, now: datetime, run: Mapping[str, Any] | None = None
) -> Taken | None:
    """``take_on`` in the session's transaction (operator actions, tests)."""
    return take_on(session.connection(), table_of(session), key, owner, ttl_seconds, now, run)


def take_on(
    connection: Connection,
    datasets: DatasetTable,
    key: str,
    owner: str,
    ttl_seconds: float,
    now: datetime,
    run: Mapping[str, Any] | None = None,
) -> Taken | None:
    """Take the lease on ``key`` in the connection's transaction: the state row (created if missing) as
    it now is, or None while another owner holds a live lease. A sync's start calls it on a Core
    connection, without an ORM session: no unit of work or identity map for a statement that needs none.

    One upsert does it (``ON CONFLICT ... DO UPDATE ... WHERE`` the lease is free, ours or expired,
    ``RETURNING`` the row, whether the dataset row exists and whether a run is left 'running'), so
    a sync learns all it needs to start in the statement that leases it. On PostgreSQL, given ``run``
    (a 'running' row's columns), that statement also adds the row and closes runs left 'running',
    both only if the lease was taken: a sync's whole start is one round trip. The state comes back
    detached: a record of the row, not a handle to change it.
    """
    values = {"key": key, "owner": owner, "expires": now + timedelta(seconds=ttl_seconds), "now": now}
    dialect = connection.dialect.name
    if run is not None and dialect == "postgresql":
        running = {f"run_{name}": value for name, value in run.items()}
        row = connection.execute(_taking_and_starting(datasets, tuple(run)), values | running).first()
        if row is None:
            return None
        *state, row_stored, _, run_id, _ = row  # stale runs were closed by the statement itself
        return Taken(_detached(state), bool(row_stored), run_id)
    row = connection.execute(_taking(dialect, datasets), values).first()
    if row is None:
        return None
    *state, row_stored, stale_runs = row
    if stale_runs:
        connection.execute(_ABANDON_STALE_RUNS, {"key": key, "now": now})
    return Taken(_detached(state), bool(row_stored))


def _detached(state: list[Any]) -> SyncState:
    return SyncState(**dict(zip(STATES.c.keys(), state, strict=True)))


@functools.cache
def _taking(dialect: str, datasets: DatasetTable) -> Insert:
    """``take``'s upsert, built once per dialect and dataset table (its values are bound at execution)."""
    owner, expires = bindparam("owner", type_=String()), bindparam("expires", type_=UTCDateTime())
    now = bindparam("now", type_=UTCDateTime())
    held_by = STATES.c.lease_owner
    available = or_(held_by.is_(None), held_by == owner, STATES.c.lease_expires_at < now)
    leased = {"lease_owner": owner, "lease_expires_at": expires}
    key = bindparam("key", type_=String())
    row_stored = exists().where(datasets.table.c.key == key).label("row_stored")
    stale_runs = exists().where(RUNS.c.dataset_key == key, RUNS.c.status == "running").label("stale_runs")
    return (
        conflict_insert(dialect)(STATES)
        .values(dataset_key=key, paused=False, consecutive_failures=0, **leased)
        .on_conflict_do_update(index_elements=[STATES.c.dataset_key], set_=leased, where=available)
        .returning(*STATES.c, row_stored, stale_runs)
    )


@functools.cache
def _taking_and_starting(datasets: DatasetTable, run_columns: tuple[str, ...]) -> Select[Any]:
    """``take`` with ``run`` on PostgreSQL: ``WITH taken AS (<the upsert>), started AS (INSERT INTO
    sync_runs ... SELECT ... FROM taken RETURNING id), abandoned AS (UPDATE sync_runs ... WHERE EXISTS
    taken) SELECT taken.*, started.id``. All parts see one snapshot: the closing of runs left 'running'
    never sees the row this statement adds, and neither happens when the lease is held elsewhere."""
    taken = _taking("postgresql", datasets).cte("taken")
    columns = [_run_value(taken, name) for name in run_columns]
    started = insert(RUNS).from_select(run_columns, select(*columns).select_from(taken)).returning(RUNS.c.id)
    abandoned = _ABANDON_STALE_RUNS.where(exists(taken.select())).cte("abandoned")
    started_id = select(started.cte("started").c.id).scalar_subquery()
    return select(taken, started_id, NO_FLUSH_WAIT).add_cte(abandoned)


def _run_value(taken: Any, name: str) -> Any:
    value = bindparam(f"run_{name}", type_=RUNS.c[name].type)
    return func.greatest(value, taken.c.last_attempt_at) if name == "started_at" else value  # ``Taken.started_at``


def acquire(sessions: sessionmaker[Session], key: str, owner: str, ttl_seconds: float) -> bool:
    """Take the lease in a transaction of its own (operator actions, tests); True when taken."""
    with sessions.begin() as session:
        return take(session, key, owner, ttl_seconds, utcnow()) is not None


def renew(sessions: sessionmaker[Session], key: str, owner: str, ttl_seconds: float) -> bool:
    """Push the lease's expiry out again; False when ``owner`` no longer holds it."""
    with sessions.begin() as session:
        result = session.execute(
            update(SyncState)
            .where(SyncState.dataset_key == key, SyncState.lease_owner == owner)
            .values(lease_expires_at=utcnow() + timedelta(seconds=ttl_seconds))
            .execution_options(synchronize_session=False)
        )
    return cast(CursorResult[Any], result).rowcount == 1


class Renewal:
    """One held lease, kept alive by this process's renewer thread (:class:`_Renewer`), so renewal
    stops exactly when the process dies, and the lease then runs out within one TTL."""

    def __init__(self, sessions: sessionmaker[Session], key: str, owner: str, ttl_seconds: float) -> None:
        self.freed = False  # set once the holder's last write has freed the lease (``freeing``)
        self.sessions, self.key, self.owner, self.ttl_seconds = sessions, key, owner, ttl_seconds
        self.due = time.monotonic() + ttl_seconds / 3
        self._lock = threading.Lock()  # held while a renewal is in flight, so ``stop`` waits for it
        self._stopped = False
        _renewer().add(self)

    def stop(self) -> None:
        """Renew no more (idempotent); the holder's last write follows, so no renewal can land after it."""
        with self._lock:
            self._stopped = True
        _renewer().discard(self)

    def renew_once(self) -> bool:
        """Renew now (the renewer thread); False once stopped or lost, so it is renewed no more."""
        with self._lock:
            if self._stopped:
                return False
            try:
                if not renew(self.sessions, self.key, self.owner, self.ttl_seconds):
                    log.warning(
                        "lease on %s was lost (expired and taken over); this sync may overlap another", self.key
                    )
                    return False
            except SQLAlchemyError as exc:  # the store may be back before the lease runs out: keep trying
                log.warning("could not renew the lease on %s: %s", self.key, exc.__class__.__name__)
            self.due = time.monotonic() + self.ttl_seconds / 3
            return True


class _Renewer:
    """One daemon thread per process renewing every lease its syncs hold, each every third of its TTL.

    A thread per sync cost a thread start and join per dataset, more than the SQL of an unchanged one.
    The held leases are as many as the syncs in flight (a few), so finding the next one due is a scan.
    """

    def __init__(self) -> None:
        self._held: dict[int, Renewal] = {}
        self._changed = threading.Condition()
        self._wake_at = math.inf
        self._idle_period = math.inf  # with nothing held, it looks again after one renewal period
        threading.Thread(target=self._run, name="lease-renewer", daemon=True).start()

    def add(self, renewal: Renewal) -> None:
        with self._changed:
            self._held[id(renewal)] = renewal
            self._idle_period = renewal.ttl_seconds / 3
            if renewal.due < self._wake_at:  # leases of one TTL fall due in order: woken only for a shorter one
                self._changed.notify()

    def discard(self, renewal: Renewal) -> None:
        with self._changed:
            self._held.pop(id(renewal), None)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not (due := self._next_due()):
                    wait = None if self._wake_at == math.inf else max(0.0, self._wake_at - time.monotonic())
                    self._changed.wait(wait)
            for renewal in due:
                if not renewal.renew_once():
                    self.discard(renewal)

    def _next_due(self) -> list[Renewal]:
        """The leases due now; sets ``_wake_at`` to when the next one is (under ``_changed``)."""
        now = time.monotonic()
        due = [renewal for renewal in self._held.values() if renewal.due <= now]
        later = [renewal.due for renewal in self._held.values() if renewal.due > now]
        self._wake_at = min(later, default=now + self._idle_period)
        return due


_renewer = PerProcess(_Renewer)  # this process's renewer, started on first use


@contextlib.contextmanager
def kept(sessions: sessionmaker[Session], key: str, owner: str, ttl_seconds: float) -> Iterator[Renewal]:
    """Hold an acquired lease for the block: renewed every third of its TTL, released at the end
    unless the block's own last write freed it (``Renewal.stop``, then ``freeing`` in that write,
    then ``freed = True``), which saves the sync a transaction."""
    renewal = Renewal(sessions, key, owner, ttl_seconds)
    try:
        yield renewal
    finally:
        renewal.stop()
        if not renewal.freed:
            release(sessions, key, owner)


def release(sessions: sessionmaker[Session], key: str, owner: str) -> None:
    with sessions.begin() as session:
        free(session, key, owner)


def free(session: Session, key: str, owner: str) -> None:
    """Release ``owner``'s lease on ``key`` in the caller's transaction."""
    session.execute(
        update(STATES)
        .where(STATES.c.dataset_key == key, STATES.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


def freeing(owner: str | BindParameter[str]) -> dict[str, Any]:
    """Values for an UPDATE of ``sync_state`` that also frees the lease if ``owner`` still holds it,
    so a sync's last write records its outcome and releases the lease in one statement."""
    ours = STATES.c.lease_owner == owner
    return {
        "lease_owner": case((ours, None), else_=STATES.c.lease_owner),
        "lease_expires_at": case((ours, None), else_=STATES.c.lease_expires_at),
    }


def expires_in(sessions: sessionmaker[Session], key: str) -> float:
    """Seconds until the current lease on ``key`` runs out (0 when free)."""
    with reading(sessions)() as session:
        expires: datetime | None = session.scalar(
            select(SyncState.lease_expires_at).where(SyncState.dataset_key == key)
        )
    return max(0.0, (expires - utcnow()).total_seconds()) if expires else 0.0


def abandon_dead_runs(sessions: sessionmaker[Session]) -> list[SyncRun]:
    """Close every ``running`` row whose syncer no longer holds a live lease; return the closed runs.

    A live sync always holds (and renews) the lease it started under, owned by the name it wrote
    in ``sync_runs.worker``; any other running row belongs to a process that died, or to a sync
    whose last write failed after which its lease was released (no owner: ``live`` is NULL in SQL,
    hence ``IS NOT true`` rather than ``NOT``).
    """
    now = utcnow()
    live = and_(SyncState.lease_owner == SyncRun.worker, SyncState.lease_expires_at > now)
    with sessions.begin() as session:
        dead = list(
            session.scalars(
                select(SyncRun)
                .outerjoin(SyncState, SyncState.dataset_key == SyncRun.dataset_key)
                .where(SyncRun.status == "running", live.is_not(True))
                .with_for_update(of=SyncRun, skip_locked=True)
            )
        )
        for run in dead:
            run.status, run.finished_at, run.error_kind, run.error_message = "failed", now, "abandoned", ABANDONED
    return dead

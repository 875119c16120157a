"""A per-dataset lease in the store: at most one worker syncs a dataset at a time.

It lives in the database every worker already shares, so it holds whoever triggered the sync
(beat, a duplicate beat, a manual re-sync, the CLI) and needs no extra server. It expires, so a
worker killed mid-sync blocks its dataset only until ``expires_at``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from models.schema import SyncRun, SyncState
from models.types import utcnow


def ensure_state(session: Session, key: str) -> SyncState:
    """The state row for ``key``, created if missing, race-free on both dialects."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(SyncState)
        .values(dataset_key=key, paused=False, consecutive_failures=0)
        .on_conflict_do_nothing(index_elements=["dataset_key"])
    )
    return session.get_one(SyncState, key, populate_existing=True)


def acquire(sessions: sessionmaker[Session], key: str, owner: str, ttl_seconds: float) -> bool:
    now = utcnow()
    with sessions.begin() as session:
        ensure_state(session, key)
        taken: bool = (
            session.execute(
                update(SyncState)
                .where(SyncState.dataset_key == key)
                .where(
                    or_(
                        SyncState.lease_owner.is_(None),
                        SyncState.lease_owner == owner,
                        SyncState.lease_expires_at < now,
                    )
                )
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl_seconds))
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]  # an UPDATE returns a CursorResult
            == 1
        )
        if taken:
            _abandon_stale_runs(session, key, now)
    return taken


def release(sessions: sessionmaker[Session], key: str, owner: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(SyncState)
            .where(SyncState.dataset_key == key, SyncState.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def expires_in(sessions: sessionmaker[Session], key: str) -> float:
    """Seconds until the current lease on ``key`` runs out (0 when free)."""
    with sessions() as session:
        expires: datetime | None = session.scalar(
            select(SyncState.lease_expires_at).where(SyncState.dataset_key == key)
        )
    return max(0.0, (expires - utcnow()).total_seconds()) if expires else 0.0


def _abandon_stale_runs(session: Session, key: str, now: datetime) -> None:
    """Runs left 'running' by a worker that died: once we hold the lease they cannot be live."""
    session.execute(
        update(SyncRun)
        .where(SyncRun.dataset_key == key, SyncRun.status == "running")
        .values(
            status="failed",
            finished_at=now,
            error_kind="abandoned",
            error_message="the worker running this sync stopped before finishing (killed or crashed)",
        )
        .execution_options(synchronize_session=False)
    )

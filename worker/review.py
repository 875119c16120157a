"""Operator review of a dataset's history: read versions and diffs, accept or reject a held
change, roll back to an earlier version, release a dataset back to auto-sync.

Writes go through the same lease, upsert and run records as a sync, so an action never races a
sync and always leaves an audit row in ``sync_runs`` (trigger ``cli``, or ``api`` from the HTTP API).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import lease
from models.datasets import StoredDataset
from models.diff import OptionsDiff
from models.schema import DatasetVersion, SyncState
from models.types import utcnow
from models.upsert import OwnedByPeople, Snapshot, load_dataset, load_syncable, spec_from_dataset, upsert_dataset
from worker.context import SyncContext
from worker.outcome import SyncOutcome
from worker.runs import clear_hold, finish_run, record_skip, start_run


class ReviewError(Exception):
    """The action cannot be done now; the message says why."""


class UnknownDataset(ReviewError):
    """No dataset with this key in the store: bad input (exit 2), not a refused action."""


def history(ctx: SyncContext, key: str) -> list[dict[str, Any]]:
    """Every stored version of ``key``, newest first, with its change counts."""
    with ctx.sessions() as session:
        _require_dataset(session, key)
        versions = session.scalars(
            select(DatasetVersion).where(DatasetVersion.dataset_key == key).order_by(DatasetVersion.version.desc())
        )
        return [
            {
                "version": v.version,
                "created_at": v.created_at.isoformat().replace("+00:00", "Z"),
                "origin": v.origin,
                "options": len(v.options),
                "codes_added": v.codes_added,
                "codes_removed": v.codes_removed,
                "codes_relabelled": v.codes_relabelled,
                "run_id": v.run_id,
            }
            for v in versions
        ]


def version_diff(
    ctx: SyncContext, key: str, from_version: int | None = None, to_version: int | None = None
) -> tuple[int, int, OptionsDiff]:
    """What changed between two versions (default: the previous and the current one)."""
    with ctx.sessions() as session:
        current = _require_dataset(session, key)
        to_version = to_version or current.version
        new = _version(session, key, to_version).options
        if from_version is None and to_version == 1:
            return 0, 1, OptionsDiff.between({}, new)
        from_version = from_version or to_version - 1
        return from_version, to_version, OptionsDiff.between(_version(session, key, from_version).options, new)


def held_change(ctx: SyncContext, key: str) -> tuple[str, OptionsDiff]:
    """The change a guard rail held back, and why."""
    with ctx.sessions() as session:
        current = _require_dataset(session, key)
        state = session.get(SyncState, key)
        if state is None or state.held_options is None:
            raise ReviewError(f"dataset {key!r} has no held change")
        return state.held_reason or "", current.diff_to(state.held_options)


def accept(ctx: SyncContext, key: str, *, trigger: str = "cli") -> SyncOutcome:
    """Apply the held change as a new version."""

    def snapshot(session: Session, state: SyncState) -> Snapshot:
        if state.held_options is None:
            raise ReviewError(f"dataset {key!r} has no held change to accept")
        return Snapshot(state.held_options, state.held_hash or "", state.held_retired or [], state.held_defaults or [])

    return _apply(ctx, key, "accept", snapshot, pause_reason=None, trigger=trigger)


def rollback(ctx: SyncContext, key: str, to_version: int, *, trigger: str = "cli") -> SyncOutcome:
    """A new version equal to ``to_version``; auto-sync then stays paused until ``release``."""

    def snapshot(session: Session, state: SyncState) -> Snapshot:
        version = _version(session, key, to_version)
        return Snapshot(version.options, version.content_hash, version.retired_codes, version.default_codes)

    reason = f"rolled back to version {to_version} on {utcnow():%Y-%m-%d %H:%M}Z"
    return _apply(ctx, key, "rollback", snapshot, pause_reason=reason, trigger=trigger)


def reject(ctx: SyncContext, key: str, *, trigger: str = "cli") -> None:
    """Drop the held change; the same upstream content is not held again, only reported."""
    with _leased(ctx, key), ctx.sessions.begin() as session:
        _require_dataset(session, key)
        state = session.get(SyncState, key)
        if state is None or state.held_options is None:
            raise ReviewError(f"dataset {key!r} has no held change to reject")
        reason = f"held change rejected by an operator ({state.held_reason})"
        state.rejected_hash = state.held_hash
        clear_hold(state)
    record_skip(ctx.sessions, key, trigger, ctx.worker_id, "rejected", reason)


def release(ctx: SyncContext, key: str, *, trigger: str = "cli") -> None:
    """Let auto-sync run again after a rollback."""
    with ctx.sessions.begin() as session:
        _require_dataset(session, key)
        state = lease.ensure_state(session, key)
        if not state.paused:
            raise ReviewError(f"dataset {key!r} is not paused")
        reason = f"auto-sync released by an operator (was: {state.paused_reason})"
        state.paused, state.paused_reason = False, None
    record_skip(ctx.sessions, key, trigger, ctx.worker_id, "released", reason)


def _apply(
    ctx: SyncContext,
    key: str,
    origin: str,
    make_snapshot: Callable[[Session, SyncState], Snapshot],
    pause_reason: str | None,
    trigger: str,
) -> SyncOutcome:
    with _leased(ctx, key):
        started = utcnow()
        with ctx.sessions.begin() as session:  # validate before leaving any trace
            _require_syncable(session, key)
            make_snapshot(session, lease.ensure_state(session, key))
        run_id = start_run(ctx.sessions, key, trigger, ctx.worker_id, started)
        with ctx.sessions.begin() as session:
            state = lease.ensure_state(session, key)
            dataset = _require_syncable(session, key)
            result = upsert_dataset(
                session,
                spec_from_dataset(dataset),
                make_snapshot(session, state),
                stamp_field=None,
                now=utcnow(),
                run_id=run_id,
                origin=origin,
            )
            outcome = SyncOutcome(
                key,
                result.status,
                result.version,
                result.options_after,
                result.diff,
                warnings=(f"{origin} by an operator",),
                run_id=run_id,
            )
            finish_run(session, run_id, outcome, started, utcnow(), options_before=result.options_before)
            clear_hold(state)
            state.etag = state.last_modified = state.source_token = state.rejected_hash = None  # full bodies next
            if pause_reason:
                state.paused, state.paused_reason = True, pause_reason
        return outcome


@contextlib.contextmanager
def _leased(ctx: SyncContext, key: str) -> Iterator[None]:
    """Hold the dataset's lease for an operator action, or refuse while a sync runs."""
    owner = f"review:{ctx.worker_id}"
    if not lease.acquire(ctx.sessions, key, owner, ctx.settings.lease_seconds):
        raise ReviewError(f"dataset {key!r} is being synced right now; try again in a moment")
    try:
        yield
    finally:
        lease.release(ctx.sessions, key, owner)


def _require_dataset(session: Session, key: str) -> StoredDataset:
    dataset = load_dataset(session, key)
    if dataset is None:
        raise UnknownDataset(f"no dataset {key!r} in the store")
    return dataset


def _require_syncable(session: Session, key: str) -> StoredDataset:
    """The row, locked for writing; rows people own are refused like missing ones."""
    try:
        dataset = load_syncable(session, key)
    except OwnedByPeople as exc:
        raise ReviewError(str(exc)) from exc
    if dataset is None:
        raise UnknownDataset(f"no dataset {key!r} in the store")
    return dataset


def _version(session: Session, key: str, version: int) -> DatasetVersion:
    row = session.scalars(
        select(DatasetVersion).where(DatasetVersion.dataset_key == key, DatasetVersion.version == version)
    ).first()
    if row is None:
        raise ReviewError(f"dataset {key!r} has no version {version}")
    return row

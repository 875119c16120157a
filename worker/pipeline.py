"""The sync pipeline, top to bottom: fetch → parse → normalise → guard → upsert → record run.

These are plain functions: the CLI calls them in-process, Celery tasks wrap them, tests call them
directly. Each dataset is synced under a lease, and everything it writes (dataset row, version,
run record, sync state) commits in one transaction, so the store only moves between good states.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from models import lease
from models.datasets import StoredDataset, table_of_factory
from models.db import autocommitting, engine_of, reading
from models.diff import OptionsDiff
from models.schema import SyncRun, SyncState
from models.types import utcnow
from models.upsert import (
    DatasetSpec,
    OwnedByPeople,
    Snapshot,
    load_dataset,
    load_syncable,
    write_dataset,
)
from scrapers import SOURCES
from scrapers.errors import PermanentError, SyncError, TransientError, redact
from scrapers.http import HttpClient, NotModified, Validators
from scrapers.normalise import Limits, OptionList, normalise
from worker import webhooks
from worker.catalogue import CatalogueEntry
from worker.context import SyncContext
from worker.outcome import SyncOutcome
from worker.runs import (
    NO_HOLD,
    add_running,
    add_skip,
    finish_run,
    finish_state,
    finish_unchanged,
    hold_values,
    own_name,
    running_row,
)
from worker.settings import Settings

log = logging.getLogger(__name__)


def sync_dataset(
    entry: CatalogueEntry,
    ctx: SyncContext,
    *,
    trigger: str = "cli",
    force: bool = False,
    refetch: bool = False,
    accept_changes: bool = False,
    attempt: int = 1,
    may_retry: bool = False,
    requested_at: datetime | None = None,
) -> SyncOutcome:
    """Sync one dataset under its lease; never raises for upstream or data problems.

    ``force`` syncs now even if fresh (a pause still holds); ``refetch`` ignores the stored
    validators; ``accept_changes`` applies what the guard rails would hold or an operator rejected.
    The store sees two transactions: the start (lease, state, running row; on SQLite a skip too) and
    the end (everything the sync writes, or a skip's record, and the lease freed). The start runs on a
    Core connection, as does a 304's end: no ORM session for the statements every sync runs. On a
    CPU-bound run on SQLite a worker process does it all (``worker.fetchers``) for this thread, under
    this thread's name as the lease owner.
    """
    options = SyncOptions(trigger, force, refetch, accept_changes, attempt, may_retry, requested_at)
    if ctx.fetchers is not None and ctx.fetchers.syncs(entry):
        outcome = ctx.fetchers.sync(entry, ctx.worker_id, options)
    else:
        outcome = sync_here(entry, ctx, ctx.worker_id, options)
    webhooks.after_sync(ctx, entry, outcome)  # after commit; never raises, never waits
    return outcome


@dataclass(frozen=True)
class SyncOptions:
    """How ``sync_dataset`` was asked to sync (its keyword arguments): what a worker process is handed."""

    trigger: str = "cli"
    force: bool = False
    refetch: bool = False
    accept_changes: bool = False
    attempt: int = 1
    may_retry: bool = False
    requested_at: datetime | None = None


def sync_here(entry: CatalogueEntry, ctx: SyncContext, owner: str, options: SyncOptions) -> SyncOutcome:
    """``sync_dataset`` in this process, its lease held as ``owner``, without the webhooks."""
    started = utcnow()
    with _starting(ctx) as (connection, skipping):
        begun = _start(
            connection,
            skipping,
            entry,
            ctx,
            owner,
            started,
            options.trigger,
            options.force,
            options.refetch,
            options.requested_at,
            options.attempt,
        )
    if isinstance(begun, SyncOutcome):
        return begun
    run_id, validators, started = begun
    with lease.kept(ctx.sessions, entry.key, owner, ctx.settings.lease_seconds) as renewal:
        sync = _Sync(entry, ctx, run_id, started, owner, renewal)
        return _run(sync, validators, accept_changes=options.accept_changes, may_retry=options.may_retry)


# Where a sync that stops at its start writes its record: a session in a transaction (``_starting``).
Skipping = Callable[[], AbstractContextManager[Session]]


@contextlib.contextmanager
def _starting(ctx: SyncContext) -> Iterator[tuple[Connection, Skipping]]:
    """The start's connection, and where a skip writes its record.

    On PostgreSQL the start is one statement (``lease.take_on`` with the run), run in autocommit: its own
    transaction, one round trip instead of three (no ``BEGIN``, no ``COMMIT``). A skip, decided after it,
    then writes its record and frees the lease in a transaction of its own. On SQLite the start is a
    transaction (``BEGIN IMMEDIATE``: the take, then the 'running' row) and a skip's session joins it."""
    engine = engine_of(ctx.sessions)
    if engine.dialect.name == "postgresql":
        with autocommitting(engine) as connection:
            yield connection, ctx.sessions.begin
        return
    with engine.begin() as connection:
        yield connection, functools.partial(ctx.sessions, bind=connection)


def _start(
    connection: Connection,
    skipping: Skipping,
    entry: CatalogueEntry,
    ctx: SyncContext,
    owner: str,
    now: datetime,
    trigger: str,
    force: bool,
    refetch: bool,
    requested_at: datetime | None,
    attempt: int,
) -> tuple[int, Validators | None, datetime] | SyncOutcome:
    """Take the lease and decide, in the start transaction: the id of a 'running' row (committed at
    once, so monitoring sees syncs in flight), the validators to send and when the sync started
    (``Taken.started_at``), or the outcome of a sync that stops here (busy, fresh, paused...) with the
    lease not kept, written in a session from ``skipping`` (``_starting``: on SQLite it joins the start's
    transaction and never ends it, so a skip is that one transaction)."""
    running = running_row(entry.key, trigger, owner, now, attempt)
    datasets, ttl = table_of_factory(ctx.sessions), ctx.settings.lease_seconds
    taken = lease.take_on(connection, datasets, entry.key, owner, ttl, now, run=running)
    if taken is None:
        busy = "another worker is syncing this dataset right now"
        with skipping() as session:
            return add_skip(session, entry.key, trigger, owner, "busy", busy, attempt=attempt)
    state = taken.state
    skip = _skip_reason(entry, state, trigger, requested_at, ctx.settings, force, retry=attempt > 1)
    if skip:
        with skipping() as session:
            lease.free(session, entry.key, owner)
            return add_skip(session, entry.key, trigger, owner, *skip, attempt=attempt, run_id=taken.run_id)
    started = taken.started_at(now)
    run_id = (
        taken.run_id
        if taken.run_id is not None
        else add_running(connection, entry.key, trigger, owner, started, attempt)
    )
    return run_id, None if refetch else _validators(state, taken.row_stored), started


@dataclass(frozen=True)
class _Sync:
    """A sync past its start transaction: what its end transaction needs."""

    entry: CatalogueEntry
    ctx: SyncContext
    run_id: int
    started: datetime
    owner: str
    renewal: lease.Renewal

    @contextlib.contextmanager
    def ending(self) -> Iterator[Session]:
        """The end transaction, in a session (``ended``)."""
        with self.ended(), self.ctx.sessions.begin() as session:
            yield session

    @contextlib.contextmanager
    def ended(self) -> Iterator[None]:
        """Around the end transaction: renewal stops first, so none lands after it; ``finish_state`` in
        it frees the lease, so no release transaction follows."""
        self.renewal.stop()
        yield
        self.renewal.freed = True


def preview_dataset(entry: CatalogueEntry, ctx: SyncContext) -> SyncOutcome:
    """What a forced sync would change, without writing anything (``sync --dry-run``)."""
    try:
        option_list, _, _ = fetch_options(entry, ctx, None)
    except SyncError as error:
        return SyncOutcome(entry.key, "failed", error_kind=error.kind, error=_redact(error.message, entry))
    with reading(ctx.sessions)() as session:
        current = load_dataset(session, entry.key)
    diff = current.diff_to(option_list.options) if current else OptionsDiff.between({}, option_list.options)
    hold = hold_reason(current, option_list, ctx.settings)
    if current is None:
        status = "would_create"
    else:
        status = "would_hold" if hold else ("unchanged" if diff.is_empty else "would_update")
    version, count = (current.version if current else None), len(option_list.options)
    return SyncOutcome(entry.key, status, version, count, diff, option_list.warnings, error=hold)


def fetch_options(
    entry: CatalogueEntry, ctx: SyncContext, validators: Validators | None
) -> tuple[OptionList, Validators, int]:
    """Fetch, parse and normalise one source; raises ``NotModified`` or ``SyncError``.

    Returns the list, the validators worth keeping (the source decides which: ``kept_validators``)
    and the body bytes downloaded (``sync_runs.bytes_fetched``). On a CPU-bound run on PostgreSQL (or
    a dry run) the work goes to a worker process (``worker.fetchers``), which runs ``fetch_here``
    under this process's politeness.
    """
    if ctx.fetchers is not None and ctx.fetchers.takes(entry):
        return ctx.fetchers.fetch(entry, validators)
    return fetch_here(entry, ctx.http, ctx.limits, validators)


def fetch_here(
    entry: CatalogueEntry, http: HttpClient, limits: Limits, validators: Validators | None
) -> tuple[OptionList, Validators, int]:
    """``fetch_options`` in this process, with the given client."""
    source = SOURCES[entry.source]
    documents = source.fetch(entry, http, validators)
    option_list = normalise(source.parse(entry, documents), limits, entry.url)
    if not option_list.options:
        raise PermanentError("empty", f"{entry.url}: the source gave no usable options")
    return option_list, source.kept_validators(documents), sum(len(document.body) for document in documents)


def _run(sync: _Sync, validators: Validators | None, *, accept_changes: bool, may_retry: bool) -> SyncOutcome:
    entry = sync.entry
    try:
        return _fetch_and_store(sync, validators, accept_changes)
    except OwnedByPeople as error:
        return _store_failure(sync, "owned_by_people", str(error), transient=False)
    except SyncError as error:
        will_retry = error.transient and may_retry
        return _store_failure(
            sync,
            error.kind,
            error.message,
            transient=error.transient,
            retry_after=error.retry_after,
            will_retry=will_retry,
        )
    except Exception as error:  # a bug or a time limit must not stop the other datasets, but must be seen
        if type(error).__name__ == "SoftTimeLimitExceeded":
            message = f"{entry.url}: the sync ran out of time"
            return _store_failure(sync, "time_limit", message, transient=True, will_retry=may_retry)
        log.exception("internal error syncing %s", entry.key)
        return _store_failure(sync, "internal", f"internal error: {error!r}", transient=False)


def _fetch_and_store(sync: _Sync, validators: Validators | None, accept_changes: bool) -> SyncOutcome:
    try:
        option_list, kept_validators, fetched = fetch_options(sync.entry, sync.ctx, validators)
    except NotModified as unchanged:
        return _store_not_modified(sync, unchanged.reason)
    return _store(sync, option_list, kept_validators, fetched, accept_changes)


def _store(
    sync: _Sync, option_list: OptionList, validators: Validators, fetched: int, accept_changes: bool
) -> SyncOutcome:
    """Guard, then upsert, record the run and the state: one transaction."""
    entry, now = sync.entry, utcnow()
    snapshot = Snapshot(
        option_list.options, option_list.content_hash, list(option_list.retired_codes), list(option_list.default_codes)
    )
    with sync.ending() as session:
        current = load_syncable(session, entry.key)
        refusal = None if accept_changes else _refusal(session, current, option_list, sync.ctx.settings)
        if refusal and current is not None:
            return _record_refusal(session, sync, current, snapshot, option_list, refusal, fetched, now)
        result = write_dataset(
            session, current, dataset_spec(entry), snapshot, stamp_field=entry.stamp_field, now=now, run_id=sync.run_id
        )
        outcome = SyncOutcome(
            entry.key,
            result.status,
            result.version,
            len(option_list.options),
            result.diff,
            option_list.warnings,
            run_id=sync.run_id,
            bytes_fetched=fetched,
        )
        before = result.options_before
        if not finish_run(session, sync.run_id, outcome, sync.started, now, options_before=before, worker=sync.owner):
            raise TransientError("abandoned", _START_LOST)  # rolls the write back: see ``finish_run``
        kept = {"etag": validators.etag, "last_modified": validators.last_modified, "source_token": validators.token}
        finish_state(session, entry.key, sync.owner, result.status, now, **kept, rejected_hash=None, **NO_HOLD)
    return outcome


_START_LOST = "the store lost this sync's start (a database crash during the sync); nothing was written"


# What an operator rejected is read again at the end: a review may have happened during the fetch. Only
# a stored row has a change to reject: a first sync's end does not read it (one statement less under
# SQLite's write lock, which the worker processes of ``sync --jobs`` queue on).
_REJECTED_HASH = select(lease.STATES.c.rejected_hash).where(lease.STATES.c.dataset_key == bindparam("key"))


def _refusal(
    session: Session, current: StoredDataset | None, new: OptionList, settings: Settings
) -> tuple[str, str] | None:
    """Why a good-looking result must not be applied unreviewed: (state, reason), or None."""
    if current is not None and _rejected_hash(session, current.key) == new.content_hash:
        return "rejected", "the upstream still offers the change an operator rejected; not applied"
    reason = hold_reason(current, new, settings)
    return ("held", reason) if reason else None


def _rejected_hash(session: Session, key: str) -> str | None:
    rejected: str | None = session.connection().execute(_REJECTED_HASH, {"key": key}).scalar()
    return rejected


def _record_refusal(
    session: Session,
    sync: _Sync,
    current: StoredDataset,
    snapshot: Snapshot,
    new: OptionList,
    refusal: tuple[str, str],
    fetched: int,
    now: datetime,
) -> SyncOutcome:
    """Keep the stored list; record the run with the diff that was not applied."""
    kind, reason = refusal
    diff = current.diff_to(new.options)
    outcome = SyncOutcome(
        current.key,
        "held" if kind == "held" else "skipped",
        current.version,
        len(current.options),
        diff,
        new.warnings,
        error_kind=kind,
        error=reason,
        run_id=sync.run_id,
        bytes_fetched=fetched,
    )
    before = len(current.options)
    finish_run(session, sync.run_id, outcome, sync.started, now, options_before=before, worker=sync.owner)
    held = hold_values(snapshot, reason, now) if kind == "held" else {}
    finish_state(session, current.key, sync.owner, kind, now, **held)
    return outcome


def _store_not_modified(sync: _Sync, reason: str) -> SyncOutcome:
    with sync.ended():
        return finish_unchanged(
            sync.ctx.sessions, sync.entry.key, sync.entry.stamp_field, sync.run_id, sync.owner, sync.started, reason
        )


def _store_failure(
    sync: _Sync,
    kind: str,
    message: str,
    *,
    transient: bool,
    retry_after: float | None = None,
    will_retry: bool = False,
) -> SyncOutcome:
    entry, now = sync.entry, utcnow()
    message = _redact(message, entry)  # every failure path passes here, so nothing unredacted is stored
    outcome = SyncOutcome(
        entry.key,
        "failed",
        error_kind=kind,
        error=message,
        transient=transient,
        retry_after=retry_after,
        will_retry=will_retry,
        run_id=sync.run_id,
    )
    with sync.ending() as session:
        current = load_dataset(session, entry.key)
        outcome.version = current.version if current else None
        before = len(current.options) if current else None
        finish_run(
            session,
            sync.run_id,
            outcome,
            sync.started,
            now,
            options_before=before,
            options_after=before,
            worker=sync.owner,
        )
        finish_state(session, entry.key, sync.owner, "failed", now)
    log.warning("sync of %s failed (%s): %s", entry.key, kind, message)
    return outcome


def end_left_sync(
    entry: CatalogueEntry, ctx: SyncContext, owner: str, since: datetime, error: SyncError, options: SyncOptions
) -> SyncOutcome:
    """The end of a sync a worker process died running for this thread since ``since`` (``worker.fetchers``).

    Its 'running' row fails with ``error``, as if the fetch had raised it here; a sync the process
    had already ended keeps the record it wrote; one it had not yet started (nothing fetched) runs here.
    """
    with reading(ctx.sessions)() as session:
        run = session.scalars(
            select(SyncRun)
            .where(SyncRun.dataset_key == entry.key, SyncRun.worker == own_name(owner), SyncRun.started_at >= since)
            .order_by(SyncRun.id.desc())
            .limit(1)
        ).first()
    if run is None:
        return sync_here(entry, ctx, owner, options)
    if run.status != "running":
        return _recorded_outcome(run)
    will_retry = error.transient and options.may_retry
    with lease.kept(ctx.sessions, entry.key, owner, ctx.settings.lease_seconds) as renewal:
        sync = _Sync(entry, ctx, run.id, run.started_at, owner, renewal)
        return _store_failure(sync, error.kind, error.message, transient=error.transient, will_retry=will_retry)


def _recorded_outcome(run: SyncRun) -> SyncOutcome:
    return SyncOutcome(
        run.dataset_key,
        run.status,
        run.version_after,
        run.options_after,
        OptionsDiff.from_json(run.changes),
        tuple(run.warnings),
        error_kind=run.error_kind,
        error=run.error_message,
        will_retry=run.will_retry,
        run_id=run.id,
        bytes_fetched=run.bytes_fetched,
    )


def hold_reason(current: StoredDataset | None, new: OptionList, settings: Settings) -> str | None:
    """Why a result looks too destructive to apply unreviewed, or None when it may be applied."""
    if current is None or not current.options:
        return None
    diff = OptionsDiff.between(current.options, new.options)
    total = len(current.options)
    if len(diff.removed) / total > settings.max_removed_share:
        return (
            f"would remove {len(diff.removed)} of {total} codes ({len(diff.removed) / total:.0%}), "
            f"more than the {settings.max_removed_share:.0%} allowed"
        )
    if len(diff.relabelled) / total > settings.max_relabelled_share:
        return (
            f"would relabel {len(diff.relabelled)} of {total} codes ({len(diff.relabelled) / total:.0%}), "
            f"more than the {settings.max_relabelled_share:.0%} allowed"
        )
    return None


def dataset_spec(entry: CatalogueEntry) -> DatasetSpec:
    return DatasetSpec(
        key=entry.key,
        name=entry.name,
        description=entry.description,
        category=entry.category,
        source_type=entry.source_type,
        tags=list(entry.tags),
        reference_url=entry.url,
        external_api_url=entry.url if entry.source_type == "api" else None,
        format_pattern=entry.format_pattern,
        sync_frequency_hours=entry.frequency_hours,
        organization_id=entry.organization_id,
        team_id=entry.team_id,
    )


def is_due(entry: CatalogueEntry, state: SyncState | None, now: datetime, settings: Settings) -> bool:
    """Due when the last success is older than the entry's frequency, unless paused, outside the
    entry's sync window, or recently refused."""
    if not entry.in_window(now):
        return False
    if state is None:
        return True
    if state.paused:
        return False
    pause = timedelta(seconds=settings.failure_pause_seconds)
    if (
        state.last_status in ("failed", "held", "rejected")
        and state.last_attempt_at
        and now < state.last_attempt_at + pause
    ):
        return False
    return state.last_success_at is None or now >= state.last_success_at + timedelta(hours=entry.frequency_hours)


def _skip_reason(
    entry: CatalogueEntry,
    state: SyncState,
    trigger: str,
    requested_at: datetime | None,
    settings: Settings,
    force: bool = False,
    *,
    retry: bool = False,
) -> tuple[str, str] | None:
    """Why this delivery should not sync; a retry of a chain runs at its countdown (the failure
    pause of ``is_due`` holds back new scans, not the retries already queued)."""
    if state.paused:
        return (
            "paused",
            f"auto-sync is paused: {state.paused_reason or 'by an operator'} (run `datasync release {entry.key}`)",
        )
    if force:
        return None
    if requested_at and state.last_success_at and state.last_success_at >= requested_at:
        return "done", f"already synced at {state.last_success_at:%Y-%m-%d %H:%M:%S}Z, after this request"
    now = utcnow()
    if trigger == "schedule" and not retry and not is_due(entry, state, now, settings):
        return "not_due", "not due yet"
    fresh = state.last_success_at and now < state.last_success_at + timedelta(hours=entry.frequency_hours)
    if trigger == "cli" and fresh:
        return "fresh", f"synced successfully within the last {entry.frequency_hours:g} h (use --force)"
    return None


def _validators(state: SyncState, row_stored: bool) -> Validators | None:
    """Conditional-request validators, only while the stored row they describe still exists."""
    if not row_stored or not (state.etag or state.last_modified or state.source_token):
        return None
    return Validators(state.etag, state.last_modified, state.source_token)


def _redact(message: str, entry: CatalogueEntry) -> str:
    return redact(message, SOURCES[entry.source].secrets(entry))

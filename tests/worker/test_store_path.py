"""The SQL one dataset sync costs: a start transaction and an end transaction, on SQLite and PostgreSQL.

Counted with SQLAlchemy's engine events (``tests/sqlcount.py``) around real syncs against the local
upstream. The start takes the lease, reads the state and commits the 'running' row (or the skip);
the end writes everything the sync changed and frees the lease.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, select

from models import lease
from models.db import get_engine
from models.schema import Dataset, DatasetVersion, SyncRun, SyncState
from models.types import utcnow
from tests.conftest import expected_result
from tests.sqlcount import SqlCount, counting
from tests.upstream import Scripted, Upstream
from worker import pipeline
from worker.catalogue import Catalogue, CatalogueEntry
from worker.context import SyncContext
from worker.outcome import SyncOutcome
from worker.pipeline import sync_dataset

KEY = "nhs_england_regions"  # one JSON page, served with an ETag: a re-sync answers 304


@pytest.fixture
def entry(catalogue: Catalogue) -> CatalogueEntry:
    return catalogue.select([KEY])[0]


@pytest.fixture
def counted(ctx: SyncContext) -> Iterator[SqlCount]:
    with counting(get_engine(ctx.settings.database_url)) as count:
        yield count


def synced(ctx: SyncContext, entry: CatalogueEntry, count: SqlCount, **options: object) -> SyncOutcome:
    """One sync with only its own SQL in ``count``."""
    count.reset()
    return sync_dataset(entry, ctx, **options)  # type: ignore[arg-type]


def stored_state(ctx: SyncContext) -> SyncState:
    with ctx.sessions() as session:
        return session.get_one(SyncState, KEY)


def run_statuses(ctx: SyncContext) -> list[str]:
    with ctx.sessions() as session:
        return list(session.scalars(select(SyncRun.status).order_by(SyncRun.id)))


def test_an_unchanged_sync_is_two_transactions_of_at_most_eight_statements(
    ctx: SyncContext, entry: CatalogueEntry, counted: SqlCount
) -> None:
    sync_dataset(entry, ctx)
    outcome = synced(ctx, entry, counted, force=True)
    assert outcome.status == "unchanged" and "304" in " ".join(outcome.warnings)
    assert counted.transactions <= 2, counted.texts
    assert counted.statements <= 8, counted.texts
    state = stored_state(ctx)
    assert (state.last_status, state.lease_owner, state.lease_expires_at) == ("unchanged", None, None)
    with ctx.sessions() as session:
        run = session.scalars(select(SyncRun).order_by(SyncRun.id.desc())).first()
    assert run is not None and (run.status, run.options_after, run.version_after) == (
        "unchanged",
        len(expected_result(KEY)["options"]),
        1,
    )


def test_an_unchanged_sync_is_two_statements_on_postgresql_and_records_all_three_rows(
    ctx: SyncContext, entry: CatalogueEntry, upstream: Upstream, counted: SqlCount
) -> None:
    sync_dataset(entry, ctx)
    upstream.script(entry.url, Scripted(status=500))
    assert sync_dataset(entry, ctx, force=True).status == "failed"
    with ctx.sessions() as session:
        stamp_before = getattr(session.scalars(select(Dataset).where(Dataset.key == KEY)).one(), entry.stamp_field)
    outcome = synced(ctx, entry, counted, force=True)
    assert (outcome.status, outcome.version, outcome.options) == ("unchanged", 1, len(expected_result(KEY)["options"]))
    if ctx.settings.database_url.startswith("postgresql"):  # the start (lease and running row), then the end
        starts, ends = (" ".join(text.split()) for text in counted.texts)
        assert starts.startswith("WITH taken AS (INSERT INTO sync_state"), counted.texts
        assert ends.startswith("WITH stamped AS (UPDATE datasets"), counted.texts
    with ctx.sessions() as session:
        run = session.get_one(SyncRun, outcome.run_id)
        stamp_after = getattr(session.scalars(select(Dataset).where(Dataset.key == KEY)).one(), entry.stamp_field)
    assert (run.status, run.version_after, run.options_before, run.options_after) == (
        "unchanged",
        1,
        outcome.options,
        outcome.options,
    )
    assert run.finished_at is not None and run.warnings == list(outcome.warnings) and run.bytes_fetched == 0
    assert stamp_after > stamp_before
    state = stored_state(ctx)
    assert (state.last_status, state.consecutive_failures, state.lease_owner) == ("unchanged", 0, None)
    assert state.last_success_at == state.last_attempt_at


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_on_postgresql_an_unchanged_sync_is_two_round_trips(ctx: SyncContext, entry: CatalogueEntry) -> None:
    """Both statements of a 304 run in autocommit, each its own transaction: psycopg sends no ``BEGIN`` or
    ``COMMIT`` around them (it sends ``BEGIN`` as a query of its own before a transaction's first statement)."""
    sync_dataset(entry, ctx)
    autocommitted: list[bool] = []

    def before_statement(connection: Connection, *_: Any) -> None:
        driver = connection.connection.dbapi_connection
        assert driver is not None
        autocommitted.append(bool(driver.autocommit))

    engine = get_engine(ctx.settings.database_url)
    event.listen(engine, "before_cursor_execute", before_statement)
    try:
        assert sync_dataset(entry, ctx, force=True).status == "unchanged"
    finally:
        event.remove(engine, "before_cursor_execute", before_statement)
    assert autocommitted == [True, True]


@contextlib.contextmanager
def commits_waiting_for_the_wal(ctx: SyncContext) -> Iterator[list[str]]:
    """``synchronous_commit`` as each PostgreSQL transaction commits, in order ('on': it waits for the flush).

    An explicit transaction is asked at its commit. A statement run in autocommit is its own transaction,
    committed as it ends, so it is 'off' when it sets the setting for its transaction (``set_config(...,
    true)``, which ends with that transaction) and 'on' otherwise."""
    seen: list[str] = []

    def before_commit(connection: Connection) -> None:
        driver = connection.connection.dbapi_connection
        assert driver is not None
        if not driver.autocommit:
            seen.append(driver.cursor().execute("SHOW synchronous_commit").fetchone()[0])

    def before_statement(connection: Connection, _cursor: Any, _text: str, parameters: Any, *_: Any) -> None:
        driver = connection.connection.dbapi_connection
        assert driver is not None
        if driver.autocommit:
            values = list(parameters.values())
            sets_off = any(values[i : i + 3] == ["synchronous_commit", "off", True] for i in range(len(values)))
            seen.append("off" if sets_off else "on")

    engine = get_engine(ctx.settings.database_url)
    event.listen(engine, "commit", before_commit)
    event.listen(engine, "before_cursor_execute", before_statement)
    try:
        yield seen
    finally:
        event.remove(engine, "commit", before_commit)
        event.remove(engine, "before_cursor_execute", before_statement)


def show_synchronous_commit(ctx: SyncContext) -> str:
    with get_engine(ctx.settings.database_url).connect() as connection:
        return str(connection.exec_driver_sql("SHOW synchronous_commit").scalar())


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_on_postgresql_only_the_start_and_an_unchanged_end_commit_without_waiting_for_the_wal(
    ctx: SyncContext, entry: CatalogueEntry, upstream: Upstream
) -> None:
    with commits_waiting_for_the_wal(ctx) as created:
        assert sync_dataset(entry, ctx).status == "created"
    with commits_waiting_for_the_wal(ctx) as unchanged:
        assert sync_dataset(entry, ctx, force=True).status == "unchanged"
    body = upstream.body_for(upstream.url_path(entry.url)).replace(b'"London"', b'"Greater London"')
    upstream.set_body(entry.url, body)
    with commits_waiting_for_the_wal(ctx) as updated:
        assert sync_dataset(entry, ctx, force=True).status == "updated"
    upstream.script(entry.url, Scripted(status=404))
    with commits_waiting_for_the_wal(ctx) as failed:
        assert sync_dataset(entry, ctx, force=True).status == "failed"
    assert (created, unchanged, updated, failed) == (["off", "on"], ["off", "off"], ["off", "on"], ["off", "on"])
    with commits_waiting_for_the_wal(ctx) as after:
        assert lease.acquire(ctx.sessions, KEY, "operator", 60)
    assert after == ["on"] and show_synchronous_commit(ctx) == "on"  # the setting was the end transaction's only


@pytest.mark.parametrize("change", ["created", "updated"])
def test_a_changed_list_is_written_in_one_transaction_after_the_start(
    ctx: SyncContext, entry: CatalogueEntry, upstream: Upstream, counted: SqlCount, change: str
) -> None:
    if change == "updated":
        sync_dataset(entry, ctx)
        body = upstream.body_for(upstream.url_path(entry.url)).replace(b'"London"', b'"Greater London"')
        upstream.set_body(entry.url, body)
    outcome = synced(ctx, entry, counted, force=True)
    assert outcome.status == change
    assert (counted.transactions, counted.writing_transactions) == (2, 2), counted.texts
    writes = [text.split(None, 2)[:2] for text in counted.texts if not text.lstrip().upper().startswith("SELECT")]
    assert ["INSERT", "INTO"] in writes  # the version row, with the dataset row, run and state after the start
    with ctx.sessions() as session:
        dataset = session.scalars(select(Dataset).where(Dataset.key == KEY)).one()
        version = session.scalars(
            select(DatasetVersion).where(DatasetVersion.dataset_key == KEY).order_by(DatasetVersion.version.desc())
        ).first()
        run = session.get_one(SyncRun, outcome.run_id)
    assert version is not None and version.version == dataset.version == outcome.version
    assert (run.status, run.version_after, version.run_id) == (change, outcome.version, run.id)
    state = stored_state(ctx)
    assert (state.last_status, state.lease_owner, state.etag is not None) == (change, None, True)


def test_a_failed_sync_is_two_transactions_and_frees_the_lease(
    ctx: SyncContext, entry: CatalogueEntry, upstream: Upstream, counted: SqlCount
) -> None:
    upstream.script(entry.url, Scripted(status=500), Scripted(status=500), Scripted(status=500))
    outcome = synced(ctx, entry, counted)
    assert outcome.status == "failed"
    assert (counted.transactions, counted.writing_transactions) == (2, 2), counted.texts
    state = stored_state(ctx)
    assert (state.last_status, state.consecutive_failures, state.lease_owner) == ("failed", 1, None)


def skip_transactions(ctx: SyncContext) -> int:
    """What a skip costs: on SQLite the start's transaction, which the skip's record joins; on PostgreSQL
    the start's one statement, its own transaction in autocommit, then the skip's record and the lease freed
    in one more."""
    return 2 if ctx.settings.database_url.startswith("postgresql") else 1


def test_a_fresh_dataset_is_skipped_at_its_start(ctx: SyncContext, entry: CatalogueEntry, counted: SqlCount) -> None:
    sync_dataset(entry, ctx)
    outcome = synced(ctx, entry, counted)
    assert (outcome.status, outcome.error_kind, outcome.version) == ("skipped", "fresh", 1)
    assert counted.transactions == skip_transactions(ctx), counted.texts
    assert stored_state(ctx).lease_owner is None
    assert run_statuses(ctx) == ["created", "skipped"]  # the start's 'running' row became the skip's record


def test_a_sync_never_starts_before_the_end_of_the_last_holder_of_its_lease(
    ctx: SyncContext, entry: CatalogueEntry
) -> None:
    """A take that waited for the last holder's end (its row lock, SQLite's write lock) read its clock
    before that end: its run starts at that end, so two syncs of one dataset never seem to overlap."""
    sync_dataset(entry, ctx)
    last_end = utcnow() + timedelta(seconds=5)  # stamped by an end this sync's take waited for
    with ctx.sessions.begin() as session:
        session.get_one(SyncState, KEY).last_attempt_at = last_end
    assert sync_dataset(entry, ctx, force=True).status == "unchanged"
    with ctx.sessions() as session:
        run = session.scalars(select(SyncRun).order_by(SyncRun.id.desc())).first()
    assert run is not None and run.started_at == last_end


def test_a_busy_dataset_is_skipped_at_its_start(ctx: SyncContext, entry: CatalogueEntry, counted: SqlCount) -> None:
    assert lease.acquire(ctx.sessions, KEY, "another-worker", 60)
    outcome = synced(ctx, entry, counted)
    assert (outcome.status, outcome.error_kind) == ("skipped", "busy")
    assert counted.transactions == skip_transactions(ctx), counted.texts
    assert stored_state(ctx).lease_owner == "another-worker"  # still theirs
    assert run_statuses(ctx) == ["skipped"]  # no 'running' row without the lease


def test_a_paused_dataset_is_skipped_at_its_start(ctx: SyncContext, entry: CatalogueEntry, counted: SqlCount) -> None:
    sync_dataset(entry, ctx)
    with ctx.sessions.begin() as session:
        session.get_one(SyncState, KEY).paused = True
    outcome = synced(ctx, entry, counted, force=True)
    assert (outcome.status, outcome.error_kind) == ("skipped", "paused")
    assert counted.transactions == skip_transactions(ctx), counted.texts
    assert stored_state(ctx).lease_owner is None
    assert run_statuses(ctx) == ["created", "skipped"]


def test_a_skip_whose_record_cannot_be_written_leaves_what_a_killed_sync_leaves(
    ctx: SyncContext, entry: CatalogueEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the start rolls back whole. On PostgreSQL its one statement committed in autocommit before
    the skip was decided: the run stays 'running' under the lease, as a worker killed mid-fetch leaves it,
    until the lease runs out and the scan closes the run. Never a half-written skip."""
    sync_dataset(entry, ctx)
    with ctx.sessions.begin() as session:
        session.get_one(SyncState, KEY).paused = True

    def store_down(*_: object, **__: object) -> None:
        raise RuntimeError("the store went away mid-skip")

    monkeypatch.setattr("worker.pipeline.add_skip", store_down)
    with pytest.raises(RuntimeError, match="mid-skip"):
        sync_dataset(entry, ctx, force=True)
    if skip_transactions(ctx) == 1:
        assert (run_statuses(ctx), stored_state(ctx).lease_owner) == (["created"], None)
        return
    assert (run_statuses(ctx), stored_state(ctx).lease_owner) == (["created", "running"], ctx.worker_id)
    with ctx.sessions.begin() as session:
        session.get_one(SyncState, KEY).lease_expires_at = utcnow() - timedelta(seconds=1)
    assert [run.error_kind for run in lease.abandon_dead_runs(ctx.sessions)] == ["abandoned"]


def test_when_the_end_transaction_fails_the_lease_is_released_and_the_scan_closes_the_run(
    ctx: SyncContext, entry: CatalogueEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def store_down(*_: object, **__: object) -> None:
        raise RuntimeError("the store went away mid-write")

    monkeypatch.setattr("worker.pipeline.finish_run", store_down)
    with pytest.raises(RuntimeError, match="went away"):
        sync_dataset(entry, ctx)
    assert stored_state(ctx).lease_owner is None  # released by lease.kept, not left to expire
    with ctx.sessions() as session:
        assert session.scalars(select(Dataset).where(Dataset.key == KEY)).first() is None  # nothing half-written
        assert session.scalars(select(SyncRun.status)).all() == ["running"]
    assert [run.error_kind for run in lease.abandon_dead_runs(ctx.sessions)] == ["abandoned"]


def test_a_304_for_a_row_people_took_over_is_refused_and_nothing_is_stamped(
    ctx: SyncContext, entry: CatalogueEntry, counted: SqlCount
) -> None:
    """The one-statement end stamps only a row a sync may write; for any other it writes nothing, and
    the end's transaction reads the row and refuses it, as every sync refuses a row people own."""
    sync_dataset(entry, ctx)
    success_before = stored_state(ctx).last_success_at
    with ctx.sessions.begin() as session:
        row = session.scalars(select(Dataset).where(Dataset.key == KEY)).one()
        row.is_custom, stamp_before = True, getattr(row, entry.stamp_field)
    outcome = synced(ctx, entry, counted, force=True)
    assert (outcome.status, outcome.error_kind) == ("failed", "owned_by_people")
    assert "304" not in " ".join(outcome.warnings)
    with ctx.sessions() as session:
        row = session.scalars(select(Dataset).where(Dataset.key == KEY)).one()
        run = session.get_one(SyncRun, outcome.run_id)
    assert getattr(row, entry.stamp_field) == stamp_before
    assert (run.status, run.error_kind) == ("failed", "owned_by_people")
    state = stored_state(ctx)
    assert (state.last_status, state.consecutive_failures, state.lease_owner) == ("failed", 1, None)
    assert state.last_success_at == success_before  # no success recorded on the way


def lose_the_start(ctx: SyncContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, during the fetch the store forgets the sync's start as a PostgreSQL crash may (that
    commit does not wait for the WAL flush): the lease is free again, and the run's id belongs to another
    worker's run, as a sequence that lost its last advance hands it out again."""
    fetch = pipeline.fetch_options

    def fetch_after_a_crash(*args: Any) -> Any:
        with ctx.sessions.begin() as session:
            run = session.scalars(select(SyncRun).where(SyncRun.status == "running")).one()
            run.worker, run.trigger = "another-worker", "schedule"
            lease.free(session, KEY, ctx.worker_id)
        return fetch(*args)

    monkeypatch.setattr(pipeline, "fetch_options", fetch_after_a_crash)


def another_workers_run(ctx: SyncContext) -> tuple[str, str, datetime | None]:
    with ctx.sessions() as session:
        run = session.scalars(select(SyncRun).where(SyncRun.worker == "another-worker")).one()
        return run.status, run.trigger, run.finished_at


def test_a_304_after_a_lost_start_never_closes_the_run_that_took_its_id(
    ctx: SyncContext, entry: CatalogueEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sync_dataset(entry, ctx).status == "created"
    lose_the_start(ctx, monkeypatch)
    assert sync_dataset(entry, ctx, force=True).status == "unchanged"  # the stamp and the state are true
    assert another_workers_run(ctx) == ("running", "schedule", None)
    state = stored_state(ctx)
    assert (state.last_status, state.lease_owner) == ("unchanged", None)


def test_a_list_written_after_a_lost_start_is_rolled_back_and_retried(
    ctx: SyncContext, entry: CatalogueEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    lose_the_start(ctx, monkeypatch)
    outcome = sync_dataset(entry, ctx)
    assert (outcome.status, outcome.error_kind, outcome.transient) == ("failed", "abandoned", True)
    assert "lost this sync's start" in (outcome.error or "")
    with ctx.sessions() as session:
        assert session.scalars(select(Dataset)).first() is None  # no list linked to another worker's run
        assert session.scalars(select(DatasetVersion)).first() is None
    assert another_workers_run(ctx) == ("running", "schedule", None)
    state = stored_state(ctx)
    assert (state.last_status, state.lease_owner) == ("failed", None)

"""Worker processes that fetch and parse for a CPU-bound ``sync --jobs N``: the threads' results, the
parent's politeness, and a clean failure when a process dies. Real local upstream and stores."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing.util
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

import worker.fetchers
from benchmarks.source import HEAVY_PAGE, page
from models.datasets import table_of
from models.schema import SyncRun, SyncState
from models.types import utcnow
from scrapers.errors import PermanentError, TransientError
from scrapers.http import NotModified
from scrapers.throttle import HostLimit, HostLimits, LocalThrottle
from tests.upstream import Scripted, Upstream
from worker.catalogue import CatalogueEntry, load_catalogue
from worker.context import SyncContext
from worker.fetchers import Fetchers, fetchers_for
from worker.outcome import SyncOutcome
from worker.pipeline import SyncOptions, end_left_sync, fetch_here, sync_dataset, sync_here
from worker.scheduling import run_per_host
from worker.settings import Settings

HOST = "www.datadictionary.nhs.uk"
PAGES = 12


def url_of(index: int) -> str:
    return f"https://{HOST}/data_dictionary/data_field_notes/bench_{index}.html"


@pytest.fixture
def heavy_entries(tmp_path: Path, upstream: Upstream) -> list[CatalogueEntry]:
    """Generated NHS DD pages (50 codes each) on the fixture host, served by the local upstream."""
    blocks = []
    for index in range(PAGES):
        upstream.set_body(url_of(index), page(index, HEAVY_PAGE))
        blocks.append(
            f'[[datasets]]\nkey = "heavy_{index}"\nname = "Heavy {index}"\ncategory = "nhs_dd"\n'
            f'source = "nhs_dd"\nurl = "{url_of(index)}"\n'
        )
    path = tmp_path / "heavy.toml"
    path.write_text("\n".join(blocks), encoding="utf-8")
    return list(load_catalogue(path).entries)


def limits_with(host_limits: str = "") -> HostLimits:
    return HostLimits(HostLimit(8, 1000.0), host_limits)


@pytest.fixture
def fast_ctx(store_url: str, upstream: Upstream) -> Iterator[SyncContext]:
    """A CPU-bound run's settings (the host allows far more than ``CPU_BOUND_REQUESTS_PER_SECOND``),
    with the in-process throttle a ``datasync sync`` without Redis has."""
    settings = Settings(
        database_url=store_url, url_rewrites=upstream.rewrites(), host_rate_per_second=1000, host_concurrency=8
    )
    context = SyncContext.from_settings(settings, LocalThrottle(limits_with()))
    yield context
    context.close()


@pytest.fixture
def fetchers(fast_ctx: SyncContext, heavy_entries: list[CatalogueEntry]) -> Iterator[Fetchers]:
    processes = Fetchers(2, heavy_entries, fast_ctx)
    yield processes
    processes.close()


def sync_all(ctx: SyncContext, entries: list[CatalogueEntry], jobs: int) -> list[SyncOutcome]:
    work = lambda entry, attempt: sync_dataset(entry, ctx, trigger="cli", force=True, refetch=True)  # noqa: E731
    return run_per_host(entries, jobs, ctx, work, lambda _: None)


def test_a_run_with_processes_stores_exactly_what_the_threads_store(
    fast_ctx: SyncContext, heavy_entries: list[CatalogueEntry], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On SQLite each sync runs whole in a worker process (both transactions there), on PostgreSQL its
    fetch does; either way under the waiting thread's name: the rows, run records and freed leases
    the threads write."""
    lent: list[list[int]] = []
    original = Fetchers.__init__

    def noting(self: Fetchers, *args: Any) -> None:
        original(self, *args)
        lent.append(self.pids)

    monkeypatch.setattr(Fetchers, "__init__", noting)
    done_in = {name: tmp_path / name for name in ("sync_here", "fetch_here")}
    for name, log in done_in.items():
        monkeypatch.setattr(worker.fetchers, name, noting_the_process(getattr(worker.fetchers, name), log))
    by_thread = {entry.key: fetch_here(entry, fast_ctx.http, fast_ctx.limits, None) for entry in heavy_entries}
    outcomes = sync_all(fast_ctx, heavy_entries, jobs=4)
    [pids] = lent
    on_sqlite = fast_ctx.sessions.kw["bind"].dialect.name == "sqlite"
    in_processes = done_in["sync_here" if on_sqlite else "fetch_here"].read_text().split()
    assert len(in_processes) == PAGES and set(map(int, in_processes)) <= set(pids) and os.getpid() not in pids
    assert [(o.key, o.status, o.options) for o in outcomes] == [(e.key, "created", 50) for e in heavy_entries]
    with fast_ctx.sessions() as session:
        table = table_of(session)
        for entry in heavy_entries:
            row = table.load(session, entry.key)
            assert row is not None and row.options == by_thread[entry.key][0].options
        runs = session.scalars(select(SyncRun)).all()
        states = session.scalars(select(SyncState)).all()
    thread_names = f"{fast_ctx.process_id}:"  # the waiting threads' names: this process, as the threads write it
    assert len(runs) == PAGES and all(run.status == "created" and run.worker.startswith(thread_names) for run in runs)
    assert {run.id for run in runs} == {outcome.run_id for outcome in outcomes}
    assert all(state.lease_owner is None and state.last_status == "created" for state in states)
    assert fast_ctx.fetchers is None  # lent for the run only


def noting_the_process(work: Callable[..., Any], log: Path) -> Callable[..., Any]:
    """``work``, noting in ``log`` the pid of each process that runs it."""

    def noted(*args: Any) -> Any:
        with log.open("a") as lines:
            lines.write(f"{os.getpid()}\n")
        return work(*args)

    return noted


def test_a_fetch_in_a_process_equals_the_fetch_in_the_thread(
    fetchers: Fetchers, fast_ctx: SyncContext, heavy_entries: list[CatalogueEntry]
) -> None:
    for entry in heavy_entries[:3]:
        assert fetchers.fetch(entry, None) == fetch_here(entry, fast_ctx.http, fast_ctx.limits, None)


def test_refusals_304s_and_retry_afters_cross_as_the_thread_raises_them(
    fetchers: Fetchers, upstream: Upstream, heavy_entries: list[CatalogueEntry]
) -> None:
    gone, busy, same = heavy_entries[:3]
    upstream.script(gone.url, Scripted(status=404))
    upstream.script(busy.url, Scripted(status=503, headers={"Retry-After": "7"}))
    upstream.script(same.url, Scripted(status=304))
    with pytest.raises(PermanentError) as refused:
        fetchers.fetch(gone, None)
    assert refused.value.kind == "http_404" and gone.url in refused.value.message
    with pytest.raises(TransientError) as later:
        fetchers.fetch(busy, None)
    assert later.value.kind == "http_503" and later.value.retry_after == 7
    with pytest.raises(NotModified):
        fetchers.fetch(same, None)
    assert fetchers.fetch(heavy_entries[3], None)[0].options  # the processes still serve


def test_a_host_given_up_after_a_processs_timeouts_is_given_up_for_every_process(
    upstream: Upstream, heavy_entries: list[CatalogueEntry], store_url: str
) -> None:
    """The timeouts count in the parent's host health: one process's timeout stops the next
    process's request before it is sent."""
    settings = Settings(
        database_url=store_url,
        url_rewrites=upstream.rewrites(),
        read_timeout=0.3,
        host_timeout_limit=1,
        host_unreachable_seconds=600,
    )
    context = SyncContext.from_settings(settings, LocalThrottle(limits_with()))
    silent, next_one = heavy_entries[:2]
    upstream.script(silent.url, Scripted(delay=5))
    fetchers = Fetchers(2, heavy_entries, context)
    try:
        with pytest.raises(TransientError) as timed_out:
            fetchers.fetch(silent, None)
        assert timed_out.value.kind == "timeout"
        with pytest.raises(TransientError) as given_up:
            fetchers.fetch(next_one, None)
        assert given_up.value.kind == "host_unreachable" and next_one.url in given_up.value.message
        assert upstream.hits(next_one.url) == []
    finally:
        fetchers.close()
        context.close()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_process_killed_mid_request_fails_its_dataset_in_one_line_and_frees_its_slot(
    upstream: Upstream, heavy_entries: list[CatalogueEntry], store_url: str
) -> None:
    settings = Settings(database_url=store_url, url_rewrites=upstream.rewrites())
    throttle = LocalThrottle(limits_with(f"{HOST}=1:1000"))  # one request at a time: a leaked slot blocks all
    context = SyncContext.from_settings(settings, throttle)
    stuck, after = heavy_entries[:2]
    upstream.script(stuck.url, Scripted(delay=60))
    fetchers = Fetchers(1, heavy_entries, context)
    try:
        failed: list[BaseException] = []

        def fetch_stuck() -> None:
            try:
                fetchers.fetch(stuck, None)
            except TransientError as error:
                failed.append(error)

        thread = threading.Thread(target=fetch_stuck)
        thread.start()
        wait_for(lambda: bool(upstream.hits(stuck.url)))  # the process holds the host's only slot
        assert throttle.wait_estimate(HOST) == math.inf
        os.kill(fetchers.pids[0], signal.SIGKILL)
        thread.join(30)
        [error] = failed
        assert isinstance(error, TransientError) and error.kind == "fetcher_died"
        assert error.message == f"{stuck.url}: the process fetching this page ended unexpectedly"
        assert throttle.wait_estimate(HOST) < math.inf  # the slot the process held was left
        assert fetchers.fetch(after, None) == fetch_here(after, context.http, context.limits, None)  # in-thread now
    finally:
        fetchers.close()
        context.close()


def test_the_parents_throttle_spaces_every_processs_requests(
    fast_ctx: SyncContext, upstream: Upstream, heavy_entries: list[CatalogueEntry]
) -> None:
    """Two processes, four threads, one host at 20 requests a second: the parent's throttle keeps
    the spacing on the wire (each process with a throttle of its own would send them together)."""
    throttle = LocalThrottle(limits_with(f"{HOST}=4:20"))
    http = fast_ctx.http.with_politeness(throttle, fast_ctx.http.host_health)
    fetchers = Fetchers(2, heavy_entries, dataclasses.replace(fast_ctx, http=http))
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda entry: fetchers.fetch(entry, None), heavy_entries))
    finally:
        fetchers.close()
        http.close()
    assert all(result[0].options for result in results)
    arrivals = sorted(when for when, path in upstream.arrivals if HOST in path)
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    assert len(arrivals) == PAGES and min(gaps) > 0.5 / 20  # 55 ms kept; unthrottled processes: ~1 ms


def test_a_request_that_fails_before_writing_leaves_the_cue_taken_with_its_slot(
    heavy_entries: list[CatalogueEntry], store_url: str
) -> None:
    """A process's slot comes with the host's sending cue (one answer per request): a request that
    never writes (nothing listens) leaves both, so the next request to the host is not blocked."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}"
    settings = Settings(database_url=store_url, url_rewrites=f"https://{HOST}={closed}/{HOST}")
    throttle = LocalThrottle(limits_with(f"{HOST}=1:1000"))  # one request at a time: a leaked slot blocks all
    context = SyncContext.from_settings(settings, throttle)
    fetchers = Fetchers(1, heavy_entries, context)
    try:
        with pytest.raises(TransientError) as refused:
            fetchers.fetch(heavy_entries[0], None)
        assert refused.value.kind == "connection"
        assert throttle.wait_estimate(HOST) < math.inf  # the slot was left
        cue = threading.Thread(target=lambda: throttle.sending(HOST).__enter__(), daemon=True)
        cue.start()
        cue.join(5)
        assert not cue.is_alive()  # the cue was left: another write to the host may begin
    finally:
        fetchers.close()
        context.close()


class _Refusing:
    @contextlib.contextmanager
    def sending(self, host: str) -> Iterator[None]:
        raise TransientError("throttled", f"{host}: no cue")
        yield


def test_entering_a_slot_and_its_cue_holds_neither_when_the_cue_fails() -> None:
    throttle = LocalThrottle(limits_with(f"{HOST}=1:1000"))
    errands = worker.fetchers._Errands({"throttle": throttle, "refusing": _Refusing()})
    with pytest.raises(TransientError):
        errands.run("enter", [("throttle", "slot", HOST), ("refusing", "sending", HOST)])
    assert errands.entered == []
    assert throttle.wait_estimate(HOST) < math.inf  # the slot entered first was left again


class _Resource:
    """Stands for a library's pooled connection that cleans up after a multiprocessing fork (kombu's
    closes its broker channels, reading from the parent's socket: a fetching process hung there)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker


def _after_a_multiprocessing_fork(resource: _Resource) -> None:
    resource.marker.write_text(str(os.getpid()))


def test_a_process_runs_no_hook_of_a_multiprocessing_fork(
    fast_ctx: SyncContext, heavy_entries: list[CatalogueEntry], tmp_path: Path
) -> None:
    resource = _Resource(tmp_path / "hook-ran")
    multiprocessing.util.register_after_fork(resource, _after_a_multiprocessing_fork)
    fetchers = Fetchers(1, heavy_entries, fast_ctx)
    try:
        assert fetchers.fetch(heavy_entries[0], None)[0].options
    finally:
        fetchers.close()
    assert not resource.marker.exists()


def test_processes_only_when_the_run_is_cpu_bound(fast_ctx: SyncContext, heavy_entries: list[CatalogueEntry]) -> None:
    polite = HostLimits(HostLimit(2, 2.0))
    assert fetchers_for(heavy_entries, 4, polite, fast_ctx) is None  # the shipped limits: politeness sets the pace
    assert fetchers_for(heavy_entries, 1, limits_with(), fast_ctx) is None  # --jobs 1 stays in its thread
    lent = fetchers_for(heavy_entries, 4, limits_with(), fast_ctx)
    try:
        cores = len(os.sched_getaffinity(0))
        assert (len(lent.pids) if lent else 0) == (min(4, cores) if cores > 1 else 0)
    finally:
        if lent is not None:
            lent.close()


def test_a_process_killed_mid_sync_fails_its_dataset_as_fetcher_died_and_frees_its_lease(
    upstream: Upstream, heavy_entries: list[CatalogueEntry], store_url: str
) -> None:
    """The process had started the sync (lease, 'running' row): the waiting thread ends that run
    as the fetch raising ``fetcher_died`` would have; nothing of the page is stored."""
    settings = Settings(database_url=store_url, url_rewrites=upstream.rewrites())
    throttle = LocalThrottle(limits_with(f"{HOST}=1:1000"))
    context = SyncContext.from_settings(settings, throttle)
    stuck, after = heavy_entries[:2]
    upstream.script(stuck.url, Scripted(delay=60))
    context.fetchers = fetchers = Fetchers(1, heavy_entries, context)
    try:
        outcomes: list[SyncOutcome] = []
        sync = lambda: outcomes.append(sync_dataset(stuck, context, may_retry=True))  # noqa: E731
        thread = threading.Thread(target=sync)
        thread.start()
        wait_for(lambda: bool(upstream.hits(stuck.url)))  # mid-request, in the process
        os.kill(fetchers.pids[0], signal.SIGKILL)
        thread.join(30)
        [outcome] = outcomes
        assert (outcome.status, outcome.error_kind, outcome.transient, outcome.will_retry) == (
            "failed",
            "fetcher_died",
            True,
            True,
        )
        assert outcome.error == f"{stuck.url}: the process fetching this page ended unexpectedly"
        with context.sessions() as session:
            [run] = session.scalars(select(SyncRun)).all()
            state = session.get_one(SyncState, stuck.key)
            assert table_of(session).load(session, stuck.key) is None
        assert (run.id, run.status, run.error_kind, run.will_retry) == (outcome.run_id, "failed", "fetcher_died", True)
        assert run.worker is not None and run.worker.startswith(f"{context.process_id}:")
        assert state.lease_owner is None and state.last_status == "failed"
        assert throttle.wait_estimate(HOST) < math.inf  # the slot the process held was left
        assert sync_dataset(after, context).status == "created"  # in this thread now
    finally:
        context.fetchers = None
        fetchers.close()
        context.close()


def test_a_sync_its_process_ended_before_dying_keeps_the_record_the_process_wrote(
    fast_ctx: SyncContext, heavy_entries: list[CatalogueEntry]
) -> None:
    """Killed between its end's commit and its answer: the thread reports what was committed and writes nothing."""
    entry, owner, since = heavy_entries[0], fast_ctx.worker_id, utcnow()
    options = SyncOptions(trigger="cli", may_retry=True)
    written = sync_here(entry, fast_ctx, owner, options)  # what the process committed
    died = TransientError("fetcher_died", f"{entry.url}: the process fetching this page ended unexpectedly")
    left = end_left_sync(entry, fast_ctx, owner, since, died, options)
    assert (left.status, left.run_id, left.version, left.options, left.diff) == (
        "created",
        written.run_id,
        written.version,
        50,
        written.diff,
    )
    with fast_ctx.sessions() as session:
        [run] = session.scalars(select(SyncRun)).all()
        assert run.status == "created" and session.get_one(SyncState, entry.key).last_status == "created"


def test_a_sync_its_process_died_before_starting_runs_in_the_thread(
    fast_ctx: SyncContext, heavy_entries: list[CatalogueEntry], upstream: Upstream
) -> None:
    """No 'running' row: the process died before its start committed, so nothing was fetched yet."""
    entry = heavy_entries[0]
    died = TransientError("fetcher_died", f"{entry.url}: the process fetching this page ended unexpectedly")
    left = end_left_sync(entry, fast_ctx, fast_ctx.worker_id, utcnow(), died, SyncOptions(trigger="cli"))
    assert left.status == "created" and left.options == 50 and len(upstream.hits(entry.url)) == 1


def test_a_store_error_in_a_process_ends_the_run_as_the_threads_would(
    fast_ctx: SyncContext, heavy_entries: list[CatalogueEntry]
) -> None:
    """Not an internal error of one dataset: the store's own exception, which the CLI reports in one line (exit 2)."""
    with fast_ctx.sessions.begin() as session:
        session.execute(text("DROP TABLE sync_state"))
    with pytest.raises(DBAPIError) as failed:
        sync_all(fast_ctx, heavy_entries, jobs=4)
    assert "sync_state" in str(failed.value)

"""In-process scheduling: each host drains its own budget, and transient failures are retried in bounds."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import select

from models.schema import SyncRun
from scrapers.throttle import HostLimit, HostLimits
from tests.upstream import Scripted, Upstream
from tests.worker.test_cli import datasync
from worker.catalogue import Catalogue, CatalogueEntry
from worker.context import SyncContext
from worker.embedded import free_port
from worker.outcome import SyncOutcome
from worker.pipeline import sync_dataset
from worker.scheduling import HostScheduler, InProcessRetries, run_per_host
from worker.settings import Settings

TRUSTS = "https://api.rcpch.ac.uk/nhs-organisations/v1/trusts/"


def entries_on(catalogue: Catalogue, host: str, count: int) -> list[CatalogueEntry]:
    return [entry for entry in catalogue.entries if host in entry.url][:count]


def test_a_thread_never_takes_a_dataset_whose_host_is_full(catalogue: Catalogue) -> None:
    nhs = entries_on(catalogue, "datadictionary", 4)
    rcpch = entries_on(catalogue, "rcpch", 2)
    scheduler = HostScheduler(nhs + rcpch, HostLimits(HostLimit(1, 1.0)))
    first, second = scheduler.take(), scheduler.take()
    assert {first[0].key, second[0].key} == {nhs[0].key, rcpch[0].key}  # one per host, not two NHS pages
    taken: list[tuple[CatalogueEntry, int] | None] = []
    waiter = threading.Thread(target=lambda: taken.append(scheduler.take()))
    waiter.start()
    time.sleep(0.2)
    assert not taken  # both hosts are full: the third thread waits instead of queueing on a throttle
    scheduler.finish(rcpch[0], None, 1)
    waiter.join(5)
    assert taken[0] is not None and taken[0][0].key == rcpch[1].key


def test_a_retry_waits_out_its_delay_without_holding_a_thread(catalogue: Catalogue) -> None:
    [entry] = entries_on(catalogue, "rcpch", 1)
    scheduler = HostScheduler([entry], HostLimits(HostLimit(1, 1.0)))
    assert scheduler.take() == (entry, 1)
    scheduler.finish(entry, 0.3, 1)
    started = time.monotonic()
    assert scheduler.take() == (entry, 2)
    assert time.monotonic() - started >= 0.25
    scheduler.finish(entry, None, 2)
    assert scheduler.take() is None


def test_a_slow_host_does_not_hold_back_the_other_hosts(
    store_url: str, upstream: Upstream, catalogue: Catalogue
) -> None:
    nhs = entries_on(catalogue, "datadictionary", 6)
    rcpch = [e for e in entries_on(catalogue, "rcpch", 7) if "per_page" not in e.url][:3]
    for entry in nhs:
        upstream.script(entry.url, Scripted(delay=0.4))
    settings = Settings(database_url=store_url, url_rewrites=upstream.rewrites(), host_concurrency=1)
    ctx = SyncContext.from_settings(settings)
    try:
        done_at: dict[str, float] = {}

        def work(entry: CatalogueEntry, attempt: int) -> SyncOutcome:
            outcome = sync_dataset(entry, ctx, trigger="cli", attempt=attempt)
            done_at[entry.key] = time.monotonic()
            return outcome

        outcomes = run_per_host(nhs + rcpch, 4, ctx, work, lambda _: None)
    finally:
        ctx.close()
    assert {outcome.status for outcome in outcomes} == {"created"}
    assert max(done_at[e.key] for e in rcpch) < max(done_at[e.key] for e in nhs)
    assert max(done_at[e.key] for e in rcpch) - min(done_at.values()) < 1.5  # not queued behind 2.4 s of NHS


@pytest.fixture
def quick_retries(store_url: str, upstream: Upstream) -> Settings:
    return Settings(
        database_url=store_url,
        url_rewrites=upstream.rewrites(),
        host_rate_per_second=100,
        retry_backoff_seconds=0.2,
        sync_retry_max_seconds=3,
    )


def sync_with_retries(settings: Settings, entry: CatalogueEntry) -> tuple[SyncOutcome, list[SyncRun]]:
    ctx = SyncContext.from_settings(settings)
    retries = InProcessRetries(ctx)
    try:
        work = lambda e, attempt: sync_dataset(e, ctx, trigger="cli", **retries.of(attempt))  # noqa: E731
        [outcome] = run_per_host([entry], 1, ctx, work, lambda _: None, retries)
        with ctx.sessions() as session:
            runs = list(session.scalars(select(SyncRun).where(SyncRun.dataset_key == entry.key).order_by(SyncRun.id)))
    finally:
        ctx.close()
    return outcome, runs


def test_in_process_sync_retries_a_429_after_its_retry_after(
    quick_retries: Settings, upstream: Upstream, catalogue: Catalogue
) -> None:
    entry = catalogue.by_key()["nhs_trusts"]
    upstream.script(TRUSTS, Scripted(status=429, headers={"Retry-After": "1"}), Scripted(status=503))
    outcome, runs = sync_with_retries(quick_retries, entry)
    assert outcome.status == "created"
    assert [(r.status, r.attempt, r.will_retry) for r in runs] == [
        ("failed", 1, True),
        ("failed", 2, True),
        ("created", 3, False),
    ]
    arrivals = [when for when, path in upstream.arrivals if path == upstream.url_path(TRUSTS)]
    assert arrivals[1] - arrivals[0] >= 1.0  # never sooner than Retry-After


def test_in_process_retries_are_bounded(quick_retries: Settings, upstream: Upstream, catalogue: Catalogue) -> None:
    entry = catalogue.by_key()["nhs_trusts"]
    upstream.script(TRUSTS, *[Scripted(status=503)] * 5)
    outcome, runs = sync_with_retries(quick_retries, entry)
    assert (outcome.status, outcome.error_kind, outcome.will_retry) == ("failed", "http_503", False)
    assert [(r.attempt, r.will_retry) for r in runs] == [(1, True), (2, True), (3, False)]  # DATASYNC_SYNC_RETRIES=2


def test_a_retry_after_longer_than_the_bound_is_reported_not_waited_for(
    quick_retries: Settings, upstream: Upstream, catalogue: Catalogue
) -> None:
    entry = catalogue.by_key()["nhs_trusts"]
    upstream.script(TRUSTS, Scripted(status=429, headers={"Retry-After": "3600"}))
    outcome, runs = sync_with_retries(quick_retries, entry)
    assert (outcome.status, outcome.error_kind) == ("failed", "http_429")
    assert [(r.status, r.will_retry) for r in runs] == [("failed", False)]
    assert len(upstream.hits(TRUSTS)) == 1


def test_permanent_failures_are_not_retried(quick_retries: Settings, upstream: Upstream, catalogue: Catalogue) -> None:
    entry = catalogue.by_key()["nhs_trusts"]
    upstream.script(TRUSTS, Scripted(status=404))
    outcome, runs = sync_with_retries(quick_retries, entry)
    assert outcome.error_kind == "http_404" and len(runs) == 1 and len(upstream.hits(TRUSTS)) == 1


def test_sync_warns_once_when_the_broker_is_unreachable(store_url: str, upstream: Upstream) -> None:
    env = {
        "DATASYNC_DATABASE_URL": store_url,
        "DATASYNC_URL_REWRITES": upstream.rewrites(),
        "DATASYNC_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    result = datasync(env, "sync", "nhs_trusts", "welsh_lhbs", "--json")
    assert result.returncode == 0, result.stderr
    assert {o["status"] for o in json.loads(result.stdout)} == {"created"}
    assert result.stderr.count("politeness limits apply to this process only") == 1
    assert "Traceback" not in result.stderr

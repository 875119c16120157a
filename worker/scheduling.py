"""In-process scheduling for ``datasync sync``: hosts never wait on each other, transient failures retry.

A plain thread pool hands datasets out in catalogue order, so when one host's budget is spent every
thread sits in that host's throttle while other hosts idle. Here a thread only takes a dataset whose
host has room (fewer datasets in progress than its concurrency limit), so each host drains its own
budget and the whole run ends near the busiest host's bound. A transient failure is put back with
a not-before time (the worker's backoff and Retry-After rules, ``worker.retry``) instead of
sleeping in a thread.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from scrapers.http import host_of
from scrapers.throttle import HostLimit, HostLimits
from worker.catalogue import CatalogueEntry
from worker.context import SyncContext
from worker.outcome import SyncOutcome
from worker.retry import end_retry_chain, in_process_delay

Work = Callable[[CatalogueEntry, int], SyncOutcome]


class InProcessRetries:
    """The bounded retry policy of ``datasync sync`` (DATASYNC_SYNC_RETRIES, ..._SYNC_RETRY_MAX_SECONDS)."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx

    def of(self, attempt: int) -> dict[str, Any]:
        """Keyword arguments for ``sync_dataset``: this attempt's number and whether it may retry."""
        return {"attempt": attempt, "may_retry": attempt <= self.ctx.settings.sync_retries}

    def delay(self, outcome: SyncOutcome, attempt: int) -> float | None:
        """Seconds before the next attempt, or None when this outcome ends the dataset's run."""
        if not outcome.will_retry:
            return None
        delay = in_process_delay(attempt, outcome.retry_after, self.ctx.settings)
        if delay is None:  # the upstream wants a longer pause than a command line should wait
            end_retry_chain(self.ctx.sessions, outcome.key)
            outcome.will_retry = False
        return delay


@dataclass(order=True)
class _Later:
    not_before: float
    order: int
    entry: CatalogueEntry = field(compare=False)
    attempt: int = field(compare=False)


class HostScheduler:
    """Hands out (entry, attempt) pairs so no host has more datasets in progress than it may serve."""

    def __init__(self, entries: list[CatalogueEntry], limits: HostLimits) -> None:
        self.limits = limits
        self.queues: dict[str, deque[tuple[CatalogueEntry, int]]] = {}
        for entry in entries:
            self.queues.setdefault(host_of(entry.url), deque()).append((entry, 1))
        self.active = dict.fromkeys(self.queues, 0)
        self.later: list[_Later] = []
        self.unfinished = len(entries)
        self.condition = threading.Condition()
        self._order = itertools.count()

    def take(self) -> tuple[CatalogueEntry, int] | None:
        """The next dataset some host has room for; None once every dataset is finished."""
        with self.condition:
            while self.unfinished:
                self._release_due_retries()
                host = self._host_with_room()
                if host is not None:
                    self.active[host] += 1
                    return self.queues[host].popleft()
                wait = self.later[0].not_before - time.monotonic() if self.later else None
                self.condition.wait(wait)
            return None

    def finish(self, entry: CatalogueEntry, retry_in: float | None, attempt: int) -> None:
        with self.condition:
            self.active[host_of(entry.url)] -= 1
            if retry_in is None:
                self.unfinished -= 1
            else:
                later = _Later(time.monotonic() + retry_in, next(self._order), entry, attempt + 1)
                heapq.heappush(self.later, later)
            self.condition.notify_all()

    def _release_due_retries(self) -> None:
        now = time.monotonic()
        while self.later and self.later[0].not_before <= now:
            due = heapq.heappop(self.later)
            self.queues[host_of(due.entry.url)].appendleft((due.entry, due.attempt))

    def _host_with_room(self) -> str | None:
        """The host with work waiting whose share of its concurrency in use is lowest."""
        candidates = [
            (self.active[host] / limit.concurrency, host)
            for host, queue in self.queues.items()
            if queue and self.active[host] < (limit := self.limits.for_host(host)).concurrency
        ]
        return min(candidates)[1] if candidates else None


@contextlib.contextmanager
def _fetchers_lent(ctx: SyncContext, entries: list[CatalogueEntry], jobs: int, limits: HostLimits) -> Iterator[None]:
    """Worker processes for the run's syncs when it is CPU-bound (``worker.fetchers``)."""
    from worker.fetchers import fetchers_for

    fetchers = fetchers_for(entries, jobs, limits, ctx)
    if fetchers is None:
        yield
        return
    ctx.fetchers = fetchers
    try:
        yield
    finally:
        ctx.fetchers = None
        fetchers.close()


def run_per_host(
    entries: list[CatalogueEntry],
    jobs: int,
    ctx: SyncContext,
    work: Work,
    on_done: Callable[[SyncOutcome], None],
    retries: InProcessRetries | None = None,
) -> list[SyncOutcome]:
    """Run ``work`` over every entry with ``jobs`` threads; outcomes in catalogue order."""
    settings = ctx.settings
    limits = HostLimits(HostLimit(settings.host_concurrency, settings.host_rate_per_second), settings.host_limits)
    scheduler = HostScheduler(entries, limits)
    results: dict[str, SyncOutcome] = {}

    def drain() -> None:
        while (taken := scheduler.take()) is not None:
            entry, attempt = taken
            retry_in: float | None = None
            try:
                outcome = work(entry, attempt)
                retry_in = retries.delay(outcome, attempt) if retries else None
                if retry_in is None:
                    results[entry.key] = outcome
                    on_done(outcome)
            finally:
                scheduler.finish(entry, retry_in, attempt)

    with _fetchers_lent(ctx, entries, jobs, limits), ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(drain) for _ in range(jobs)]:
            future.result()
    return [results[entry.key] for entry in entries]

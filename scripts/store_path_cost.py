"""Store bookkeeping per unchanged (304) dataset sync, one thread, SQLite or PostgreSQL (issue 11's store-path figure).

Syncs N copies of one catalogue entry against the local test upstream, then re-syncs them all
(forced, so none is skipped as fresh): each answers 304. The time spent outside ``fetch_options``
is the store's bookkeeping: wall time (fsync waits included) and the syncing thread's CPU time (what
a busy shared machine inflates least). Prints medians over several rounds, with the SQL counted.

    .venv/bin/python scripts/store_path_cost.py --datasets 200 --rounds 5 [--store postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.db import get_engine, migrate  # noqa: E402
from tests.sqlcount import counting  # noqa: E402
from tests.upstream import Upstream  # noqa: E402
from worker import pipeline  # noqa: E402
from worker.catalogue import load_catalogue  # noqa: E402
from worker.context import SyncContext  # noqa: E402
from worker.settings import DEFAULT_CATALOGUE, Settings  # noqa: E402

TEMPLATE = "nhs_england_regions"  # one JSON page the upstream answers 304 for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    template = load_catalogue(DEFAULT_CATALOGUE).select([TEMPLATE])[0]
    entries = [replace(template, key=f"cost_{index:04d}") for index in range(args.datasets)]
    fetching = [0.0, 0.0]  # wall, thread CPU
    fetch = pipeline.fetch_options

    def timed_fetch(*fetch_args: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return fetch(*fetch_args)
        finally:
            fetching[0] += time.perf_counter() - started
            fetching[1] += time.thread_time() - cpu

    pipeline.fetch_options = timed_fetch  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as scratch, Upstream() as upstream, store_url(args.store, Path(scratch)) as url:
        migrate(url)
        settings = Settings(database_url=url, url_rewrites=upstream.rewrites())
        ctx = SyncContext.from_settings(settings)
        for entry in entries:
            assert pipeline.sync_dataset(entry, ctx).status == "created"
        totals, stores, cpus, statements, transactions, writing = [], [], [], [], [], []
        for _ in range(args.rounds):
            fetching[:] = [0.0, 0.0]
            with counting(get_engine(url)) as count:
                started, cpu = time.perf_counter(), time.thread_time()
                for entry in entries:
                    assert pipeline.sync_dataset(entry, ctx, force=True).status == "unchanged"
                total, cpu = time.perf_counter() - started, time.thread_time() - cpu
            totals.append(total / args.datasets * 1000)
            stores.append((total - fetching[0]) / args.datasets * 1000)
            cpus.append((cpu - fetching[1]) / args.datasets * 1000)
            statements.append(count.statements / args.datasets)
            transactions.append(count.transactions / args.datasets)
            writing.append(count.writing_transactions / args.datasets)
        ctx.close()
        get_engine(url).dispose()
    print(f"{args.datasets} unchanged (304) datasets, {args.store}, 1 thread, median of {args.rounds} rounds")
    total, store = statistics.median(totals), statistics.median(stores)
    print(f"per dataset: {total:.2f} ms in all, {store:.2f} ms store bookkeeping (wall)")
    print(f"per dataset: {statistics.median(cpus):.2f} ms store bookkeeping (CPU of the syncing thread)")
    sql, commits = statistics.median(statements), statistics.median(transactions)
    print(f"per dataset: {sql:.1f} statements in {commits:.1f} transactions ({statistics.median(writing):.1f} writing)")
    print(f"rounds (store ms): {', '.join(f'{value:.2f}' for value in stores)}")


@contextlib.contextmanager
def store_url(kind: str, scratch: Path) -> Iterator[str]:
    """A file SQLite store, or a database on a local PostgreSQL server started for the run."""
    if kind == "sqlite":
        yield f"sqlite:///{scratch / 'cost.db'}"
        return
    from tests.servers import PostgresServer

    server = PostgresServer(scratch / "postgres")
    try:
        yield str(server.new_database())
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""The in-process CLI path in a process of its own: what ``datasync sync`` runs, phase by phase, on command.

The runner keeps the upstream in its own process and sends this one commands over a pipe, so the
figures are one sync process's (its peak RSS included) and the upstream's CPU is not in its GIL.
SQL is counted here with ``tests/sqlcount.py``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from models.db import get_engine
from tests.sqlcount import counting
from worker.catalogue import CatalogueEntry, load_catalogue
from worker.context import SyncContext, throttle_for
from worker.outcome import SyncOutcome
from worker.pipeline import sync_dataset
from worker.scheduling import InProcessRetries, run_per_host
from worker.settings import Settings


@dataclass(frozen=True)
class SyncCommand:
    """One ``datasync sync --all [--force] [--refetch] --jobs N``."""

    jobs: int = 4
    force: bool = False
    refetch: bool = False


def peak_rss_mb(pid: int | str = "self") -> float:
    """The process's peak resident set (VmHWM), in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def run_sync(settings: Settings, command: SyncCommand) -> dict[str, Any]:
    """One sync of the whole catalogue as the CLI does it: its scheduler, retries and throttle."""
    entries = list(load_catalogue(settings.catalogue).entries)
    ctx = SyncContext.from_settings(settings, throttle_for(settings))
    retries = InProcessRetries(ctx)

    def work(entry: CatalogueEntry, attempt: int) -> SyncOutcome:
        again = retries.of(attempt)
        return sync_dataset(
            entry,
            ctx,
            trigger="cli",
            force=command.force,
            refetch=command.refetch,
            attempt=again["attempt"],
            may_retry=again["may_retry"],
        )

    try:
        engine = get_engine(settings.database_url)
        with counting(engine) as sql:
            started = time.perf_counter()
            outcomes = run_per_host(entries, command.jobs, ctx, work, lambda _: None, retries)
            wall = time.perf_counter() - started
    finally:
        ctx.close()
    statuses = Counter(outcome.status for outcome in outcomes)
    return {
        "wall_s": wall,
        "datasets": len(entries),
        "statuses": dict(statuses),
        "statements": sql.statements,
        "transactions": sql.transactions,
        "writing_transactions": sql.writing_transactions,
        "write_locking_transactions": sql.write_locking_transactions,
    }


def serve(connection: Connection, env: dict[str, str]) -> None:
    """The child's loop: a ``SyncCommand`` runs a sync, ``"peak"`` answers the peak RSS, None ends."""
    for name in [name for name in os.environ if name.startswith("DATASYNC_")]:
        del os.environ[name]  # only what the runner gives this store and catalogue
    os.environ.update(env)
    settings = Settings()
    while (command := connection.recv()) is not None:
        if command == "peak":
            connection.send(peak_rss_mb())
        else:
            connection.send(run_sync(settings, command))
    connection.close()

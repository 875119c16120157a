"""The Celery path: two real ``datasync worker`` processes on a real Redis, tasks enqueued as ``resync`` does.

The runner's process only enqueues (``worker.tasks.enqueue_syncs``, what ``datasync resync`` calls)
and collects the results; every sync runs in the workers. The workers run as
``python -m benchmarks.worker_sql worker`` (``datasync worker`` with SQL counters in its pool
processes), so each phase's statements and transactions are counted where they are sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from benchmarks.cli_path import peak_rss_mb
from benchmarks.worker_sql import COUNTED, DIRECTORY_VARIABLE, WorkerSql
from tests.worker.celery_harness import stop_process_groups

READY_SECONDS = 180.0
WORKERS = 2


class CeleryWorkers:
    """Two worker processes (each with its default pool) for one store and catalogue."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")} | env
        self.log_dir = log_dir
        self.sql_dir = log_dir / "sql"
        self.sql_dir.mkdir()
        self.env[DIRECTORY_VARIABLE] = str(self.sql_dir)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[str]] = []
        self.sql: WorkerSql | None = None
        self.counted: Counter[str] = Counter()

    def __enter__(self) -> CeleryWorkers:
        for index in range(WORKERS):
            log = (self.log_dir / f"worker-{index}.log").open("w")  # noqa: SIM115 - closed in __exit__
            self.logs.append(log)
            command = [sys.executable, "-m", "benchmarks.worker_sql", "worker", "--loglevel=INFO"]
            command += ["-n", f"bench{index}@%h"]
            self.processes.append(
                subprocess.Popen(
                    [*command, "--without-mingle", "--without-gossip"],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self._wait_ready()
        self.sql = WorkerSql(self.sql_dir, [process.pid for process in self.processes])
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process_groups(self.processes, grace_seconds=30)
        for log in self.logs:
            log.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        paths = [Path(log.name) for log in self.logs]
        while not all(" ready." in path.read_text() for path in paths):
            if any(process.poll() is not None for process in self.processes) or time.monotonic() > deadline:
                tails = "\n".join(path.read_text()[-2000:] for path in paths)
                raise RuntimeError(f"the Celery workers did not become ready:\n{tails}")
            time.sleep(0.1)  # poll the logs, do not spin: the workers need the CPU to start
            time.sleep(0.2)

    def resync(self, keys: list[str], *, force: bool = False, refetch: bool = False) -> dict[str, Any]:
        """One phase (``run_resync``) and the SQL the workers sent for it."""
        assert self.sql is not None, "enter the workers first"
        run = run_resync(keys, force=force, refetch=refetch)
        totals = self.sql.totals()
        counted = {kind: totals[kind] - self.counted[kind] for kind in COUNTED}
        self.counted = totals
        return run | counted

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak RSS of the worker main processes and of their busiest pool process."""
        mains = [peak_rss_mb(process.pid) for process in self.processes]
        pools = [peak_rss_mb(child) for process in self.processes for child in children(process.pid)]
        return {"worker main": max(mains), "worker pool process": max(pools, default=0.0)}


def children(pid: int) -> list[int]:
    """The process's direct children (its Celery pool), from /proc."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def run_resync(keys: list[str], *, force: bool = False, refetch: bool = False, timeout: float = 3600) -> dict[str, Any]:
    """Enqueue one task per key as ``datasync resync`` does and wait for every result."""
    from celery.result import ResultSet

    from worker.tasks import enqueue_syncs

    started = time.perf_counter()
    results = enqueue_syncs(keys, force, "manual", refetch=refetch)
    enqueued = time.perf_counter()
    payloads = ResultSet(results).join_native(timeout=timeout, propagate=False)
    wall = time.perf_counter() - started
    statuses = Counter(p.get("status", "?") if isinstance(p, dict) else "task_error" for p in payloads)
    return {"wall_s": wall, "enqueue_s": enqueued - started, "datasets": len(keys), "statuses": dict(statuses)}

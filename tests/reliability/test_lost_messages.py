"""Messages no live worker holds, handed back by the scan (``worker.held``), with real workers on a real Redis.

A whole worker killed before it could record a message it had just received, with the shipped timers; and a
worker stalled (SIGSTOP) past its alive key, whose late acknowledgement must not remove the copy handed back
to another worker, which is then killed too.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.reliability.conftest import assert_versions_consistent, first_success_after, runs_of, shipped_keys
from tests.servers import RedisServer
from tests.upstream import Scripted, Upstream
from tests.worker.celery_harness import CeleryProcesses, wait_until, write_catalogue
from worker import held
from worker.catalogue import load_catalogue
from worker.settings import DEFAULT_CATALOGUE, get_settings

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
TARGET = 120  # seconds from the kill to the dataset's next successful sync (issue 7)
COUNTDOWN = 90  # the stalled worker's message: long enough to stall it, hand it back and busy the new holder first


def worker_args(name: str, *extra: str) -> list[str]:
    return ["--loglevel=INFO", "--concurrency=1", "-n", f"{name}@%h", "--without-mingle", "--without-gossip", *extra]


def sync_messages(broker: redis.Redis) -> dict[str, tuple[str, str | None]]:
    """Every unacknowledged sync message: delivery tag -> (dataset, the worker ``datasync:held`` names)."""
    found = {}
    for tag, raw in broker.hgetall("unacked").items():
        message = json.loads(raw)[0]
        if message["headers"].get("task") == "datasync.sync_dataset":
            key = json.loads(base64.b64decode(message["body"]))[1]["key"]
            holder = broker.hget(held.HELD, tag)
            found[tag.decode()] = (key, holder.decode() if holder else None)
    return found


def held_by(broker: redis.Redis, key: str, name: str) -> str | None:
    """The tag of ``key``'s message once worker ``name`` (node name prefix) has recorded it."""
    tags = [tag for tag, (k, holder) in sync_messages(broker).items() if k == key and (holder or "").startswith(name)]
    return tags[0] if tags else None


def test_with_shipped_timers_a_message_its_worker_died_before_recording_runs_within_two_minutes(
    shipped_fleet: CeleryProcesses, pg_url: str, redis_server: RedisServer, results: dict[str, Any]
) -> None:
    """A fresh dataset's manual re-sync reaches a worker that dies in the round trip before the record: no
    holder, no pending mark, not due. Only the scan's hand-back of a settled, unrecorded message brings it back."""
    [key] = shipped_keys(1)
    write_catalogue(Path(shipped_fleet.env["DATASYNC_CATALOGUE"]), [key])
    first = shipped_fleet.cli("sync", key)
    assert first.returncode == 0, first.stdout + first.stderr
    victim = shipped_fleet.start("worker", *worker_args("victim", "-I", "tests.reliability.dies_before_recording"))
    shipped_fleet.wait_ready(victim)
    shipped_fleet.beat(1)
    queued = shipped_fleet.cli("resync", key)
    assert queued.returncode == 0, queued.stdout + queued.stderr
    wait_until(lambda: victim.poll() is not None, 60, "the worker to die on receiving the sync", shipped_fleet)
    moment = datetime.now(UTC)
    broker = redis.Redis.from_url(redis_server.url())
    assert list(sync_messages(broker).values()) == [(key, None)]  # delivered by kombu, recorded by nobody
    shipped_fleet.start("worker", *worker_args("w2"))
    success = wait_until(
        lambda: first_success_after(runs_of(pg_url), key, moment), TARGET + 60, f"{key} synced again", shipped_fleet
    )
    recovery = round((success.finished_at - moment).total_seconds(), 1)
    results.update(recovery_seconds=recovery)
    assert recovery <= TARGET
    assert success.trigger == "manual"
    assert_versions_consistent(pg_url)


class HoldOne:
    """Every request for ``path`` waits until released (or ``limit`` s): the new holder's pool stays busy."""

    def __init__(self, path: str, limit: float) -> None:
        self.path, self.limit = path.partition("?")[0], limit
        self.seen = threading.Event()
        self.released = threading.Event()

    def __call__(self, path: str) -> Scripted | None:
        if path.partition("?")[0] == self.path:
            self.seen.set()
            self.released.wait(self.limit)
        return None


class Broker:
    """The fleet's broker seen from the test: queue a sync, and run beat's hand-back when the test chooses."""

    def __init__(self, url: str) -> None:
        from worker.broker import celery_client

        self.app = celery_client(get_settings(), url)
        self.redis = redis.Redis.from_url(url)

    def queue_manual(self, key: str, countdown: float) -> None:
        kwargs = {"key": key, "trigger": "manual", "requested_at": datetime.now(UTC).isoformat()}
        self.app.send_task("datasync.sync_dataset", kwargs=kwargs, countdown=countdown)

    def scan(self) -> int:
        return held.hand_back_lost_messages(self.app)


@pytest.fixture
def fleet_broker(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    monkeypatch.setenv("DATASYNC_BROKER_URL", redis_server.url())
    get_settings.cache_clear()
    yield Broker(redis_server.url())
    get_settings.cache_clear()


def test_a_stalled_workers_late_acknowledgement_does_not_lose_the_copy_handed_back_to_another(
    shipped_fleet: CeleryProcesses,
    pg_url: str,
    redis_server: RedisServer,
    upstream: Upstream,
    fleet_broker: Broker,
    results: dict[str, Any],
) -> None:
    """Worker A holds a manual sync waiting out its countdown and is SIGSTOPped past its alive key: the scan
    hands the message back and worker B takes it, then B's only pool process is kept busy by another sync.
    A is resumed, runs its copy at the countdown and acknowledges it. B is SIGKILLed still holding its copy:
    that copy must come back and run (a skipped run: the dataset was synced by A's copy)."""
    stalled, other = shipped_keys(2)
    entries = load_catalogue(DEFAULT_CATALOGUE).by_key()
    write_catalogue(Path(shipped_fleet.env["DATASYNC_CATALOGUE"]), [stalled, other])
    shipped_fleet.env |= {"DATASYNC_READ_TIMEOUT": "150", "DATASYNC_REQUEST_DEADLINE_SECONDS": "150"}
    upstream.fault = hold = HoldOne(upstream.url_path(entries[other].url), 150)
    broker = fleet_broker.redis
    a = shipped_fleet.start("worker", *worker_args("a"))
    shipped_fleet.wait_ready(a)
    due = time.monotonic() + COUNTDOWN
    fleet_broker.queue_manual(stalled, COUNTDOWN)
    first_tag = wait_until(lambda: held_by(broker, stalled, "a@"), 60, "A to hold the message", shipped_fleet)
    a_alive = held.alive_key(broker.hget(held.HELD, first_tag).decode())
    os.killpg(a.pid, signal.SIGSTOP)
    try:
        b = shipped_fleet.start("worker", *worker_args("b"))
        shipped_fleet.wait_ready(b)
        second_tag = wait_until(
            lambda: fleet_broker.scan() >= 0 and held_by(broker, stalled, "b@"),
            90,
            "the hand-back, taken by B",
            shipped_fleet,
        )
        fleet_broker.queue_manual(other, 0)
        assert hold.seen.wait(60), "B's pool process never started the other sync"
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    wait_until(lambda: broker.exists(a_alive), 30, "A alive again", shipped_fleet)
    assert time.monotonic() < due, "the machine was too slow to set the scene before the countdown"
    by_a = wait_until(lambda: finished_runs(pg_url, stalled), COUNTDOWN + 60, "A to run its copy", shipped_fleet)
    os.killpg(b.pid, signal.SIGKILL)  # A acknowledges within ms; B's copy is settled and B's alive key gone only later
    b.wait(30)
    hold.released.set()
    moment = datetime.now(UTC)
    later = wait_until(
        lambda: fleet_broker.scan() >= 0 and finished_runs(pg_url, stalled)[len(by_a) :],
        TARGET,
        "B's copy to come back and run",
        shipped_fleet,
    )
    results.update(
        back_seconds=round((later[0].finished_at - moment).total_seconds(), 1),
        runs=[(r.status, r.error_kind) for r in by_a + later],
    )
    assert second_tag != first_tag  # the hand-back is a new delivery: A's acknowledgement could not touch it
    assert [r.status for r in by_a] == ["created"]
    assert {r.status for r in later} == {"skipped"}  # the second delivery ran and changed nothing
    assert first_success_after(runs_of(pg_url), stalled, moment) is None
    assert_versions_consistent(pg_url)


def finished_runs(pg_url: str, key: str) -> list[Any]:
    return [r for r in runs_of(pg_url) if r.dataset_key == key and r.status != "running"]

"""The 2-minute recovery target end to end, with the shipped timers: nothing scaled down.

Lease 60 s renewed every 20 s, beat every 30 s, due jitter 10 s, shipped retries, time limits and
politeness (2 requests/s, 2 in flight per host). A worker is killed while it holds a sync of each
dataset (in flight, or a message waiting out its countdown: a retry's backoff, the scan's jitter);
every one of them must be synced again within 120 s of the kill.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection

from models.schema import SyncRun
from tests.reliability.conftest import (
    SUCCESS,
    assert_versions_consistent,
    first_success_after,
    runs_of,
    shipped_keys,
)
from tests.reliability.test_kills import in_flight, pids_of
from tests.servers import RedisServer
from tests.upstream import Scripted, Upstream
from tests.worker.celery_harness import CeleryProcesses, pool_children, wait_until, write_catalogue
from worker.catalogue import load_catalogue
from worker.settings import DEFAULT_CATALOGUE

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
TARGET = 120  # seconds from the kill to the dataset's next successful sync (issue 7)
HOLD_SECONDS = 25  # under the shipped 30 s read timeout: a held request must not time out before the kill


class Holding:
    """While on, every request waits (up to HOLD_SECONDS) before it is answered: syncs stay in flight."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.held: list[str] = []

    def __call__(self, path: str) -> Scripted | None:
        self.held.append(path)
        self.released.wait(HOLD_SECONDS)
        return None


@pytest.mark.parametrize("victim", ["pool process", "whole worker"])
def test_with_shipped_timers_a_killed_workers_datasets_are_synced_again_within_two_minutes(
    victim: str,
    shipped_fleet: CeleryProcesses,
    pg_url: str,
    upstream: Upstream,
    results: dict[str, Any],
) -> None:
    keys = shipped_keys(4)  # two NHS pages and two RCPCH lists: both hosts' two slots in flight
    holding = Holding()
    upstream.fault = holding
    worker = shipped_fleet.worker("w1", concurrency=4)
    beat = shipped_fleet.beat(1)
    held = wait_until(
        lambda: (found := in_flight(pg_url, pids_of(worker))) == set(keys) and found,
        90,
        "a sync of every dataset in flight on the worker (beat's first scan, then up to 10 s of jitter)",
        shipped_fleet,
    )
    if victim == "whole worker":
        killed = held
        moment = kill_whole_worker(worker, shipped_fleet)
    else:
        moment = datetime.now(UTC)
        child = min((c for c in pool_children(worker) if in_flight(pg_url, {c.pid})), key=lambda c: c.pid)
        killed = in_flight(pg_url, {child.pid})
        os.kill(child.pid, signal.SIGKILL)  # Celery replaces it and the message is redelivered at once
    holding.released.set()
    recovery = wait_synced_again(killed, moment, pg_url, shipped_fleet)
    os.killpg(beat.pid, signal.SIGTERM)
    beat.wait(30)
    assert_versions_consistent(pg_url)
    abandoned = [r.dataset_key for r in runs_of(pg_url) if r.error_kind == "abandoned"]
    results.update(victim=victim, killed_syncs=len(killed), recovery_seconds=recovery, abandoned=sorted(abandoned))
    assert max(recovery.values()) <= TARGET, recovery
    assert set(abandoned) >= killed  # each dead run was closed, not left running


def held_syncs(broker_url: str) -> list[dict[str, Any]]:
    """The kwargs of every sync message a worker has received and not acknowledged (kombu's ``unacked`` hash)."""
    held = []
    for raw in redis.Redis.from_url(broker_url).hvals("unacked"):
        message = json.loads(raw)[0]
        if message["headers"].get("task") == "datasync.sync_dataset":
            _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            held.append(kwargs)
    return held


def restore_unacked(broker_url: str) -> None:
    """What Redis does once the visibility timeout has passed: every unacknowledged message back on its queue."""
    with Connection(broker_url, transport_options={"visibility_timeout": 0}) as connection:
        connection.default_channel.qos.restore_visible(num=1000)


def kill_whole_worker(worker: subprocess.Popen, fleet: CeleryProcesses) -> datetime:
    """SIGKILL a worker's main process and pool (nothing acks or rejects its messages); start another."""
    moment = datetime.now(UTC)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    fleet.worker("w2", concurrency=4)
    return moment


def wait_synced_again(keys: set[str], moment: datetime, pg_url: str, fleet: CeleryProcesses) -> dict[str, float]:
    """Seconds from ``moment`` to each dataset's first success after it."""
    recovery = {}
    for key in sorted(keys):
        success = wait_until(
            lambda key=key: first_success_after(runs_of(pg_url), key, moment),
            TARGET + 60,
            f"{key} to be synced again after the kill",
            fleet,
        )
        recovery[key] = round((success.finished_at - moment).total_seconds(), 1)
    return recovery


def unstarted(held: list[dict[str, Any]], pg_url: str) -> set[str]:
    """Datasets of ``held`` messages that have no run at all yet: waiting out their countdown."""
    started = {run.dataset_key for run in runs_of(pg_url)}
    return {kwargs["key"] for kwargs in held} - started


def test_with_shipped_timers_a_retry_lost_with_its_worker_runs_within_two_minutes(
    shipped_fleet: CeleryProcesses, pg_url: str, redis_server: RedisServer, upstream: Upstream, results: dict[str, Any]
) -> None:
    """The first attempt fails (503), its retry waits out its 15-30 s backoff in the worker's memory, and the
    whole worker is killed: the scan re-queues it (no live mark, no lease) despite the 1 h failure pause,
    as attempt 2 of the same chain, or hands back the dead worker's original, whichever comes first. A
    second delivery (the other one, or Redis restoring the original) changes nothing."""
    keys, broker = shipped_keys(4), redis_server.url()
    failing = keys[0]
    upstream.script(load_catalogue(DEFAULT_CATALOGUE).by_key()[failing].url, Scripted(503))
    worker = shipped_fleet.worker("w1", concurrency=4)
    beat = shipped_fleet.beat(1)
    wait_until(
        lambda: any(kw["key"] == failing and kw.get("attempt") == 2 for kw in held_syncs(broker)),
        90,
        f"the retry of {failing} held by the worker, waiting out its backoff",
        shipped_fleet,
    )
    moment = kill_whole_worker(worker, shipped_fleet)
    runs = runs_of(pg_url)
    assert not [r for r in runs if r.dataset_key == failing and r.attempt == 2], "the retry ran before the kill"
    unsynced = set(keys) - {r.dataset_key for r in runs if r.status in SUCCESS}
    recovery = wait_synced_again(unsynced, moment, pg_url, shipped_fleet)
    os.killpg(beat.pid, signal.SIGTERM)
    beat.wait(30)
    restore_unacked(broker)  # what the killed worker held and the scan has not handed back yet comes back too
    client = redis.Redis.from_url(broker)
    wait_until(
        lambda: not client.hlen("unacked") and not client.llen("datasync"),
        60,
        "every handed-back or restored message to be handled",
        shipped_fleet,
    )
    chain = chain_of(pg_url, failing)
    results.update(recovery_seconds=recovery, chain=[(r.status, r.attempt, r.will_retry, r.error_kind) for r in chain])
    assert max(recovery.values()) <= TARGET, recovery
    # A second delivery (the retry's, or the first attempt's when the kill came before its acknowledgement) is a
    # skipped run wherever it falls in the chain, and changed nothing.
    synced = [(r.status, r.attempt, r.will_retry) for r in chain if r.status != "skipped"]
    assert synced == [("failed", 1, True), ("created", 2, False)], chain
    assert_versions_consistent(pg_url)


def chain_of(pg_url: str, key: str) -> list[SyncRun]:
    return [run for run in runs_of(pg_url) if run.dataset_key == key]


def test_with_shipped_timers_a_scan_queued_sync_lost_with_its_worker_runs_within_two_minutes(
    shipped_fleet: CeleryProcesses, pg_url: str, redis_server: RedisServer, results: dict[str, Any]
) -> None:
    """The worker is killed while beat's first scan's messages wait out their jitter (0-10 s) in its memory:
    their marks outlive the countdown by one scan, so the scan after that queues them again."""
    broker = redis_server.url()
    worker = shipped_fleet.worker("w1", concurrency=4)
    shipped_fleet.beat(1)
    waiting = wait_until(
        lambda: unstarted(held_syncs(broker), pg_url),
        90,
        "a scan-queued message held by the worker, waiting out its jitter",
        shipped_fleet,
    )
    moment = kill_whole_worker(worker, shipped_fleet)
    recovery = wait_synced_again(set(shipped_keys(4)), moment, pg_url, shipped_fleet)
    results.update(waiting_at_kill=sorted(waiting), recovery_seconds=recovery)
    assert max(recovery[key] for key in waiting) <= TARGET, recovery
    assert max(recovery.values()) <= TARGET, recovery
    assert_versions_consistent(pg_url)


def test_with_shipped_timers_a_manual_resync_lost_with_its_worker_runs_within_two_minutes(
    shipped_fleet: CeleryProcesses, pg_url: str, redis_server: RedisServer, upstream: Upstream, results: dict[str, Any]
) -> None:
    """Every dataset is fresh, then `resync --all` while the upstream holds each request: both hosts' two
    slots are taken, and the other datasets' manual messages wait for their host in the worker's memory
    (sent back with a countdown). The whole worker is killed with them in hand. A fresh dataset is not due
    and promises no retry, so only the hand-back of the dead worker's messages brings them back."""
    keys, broker = shipped_keys(6), redis_server.url()
    write_catalogue(Path(shipped_fleet.env["DATASYNC_CATALOGUE"]), keys)
    worker = shipped_fleet.worker("w1", concurrency=6)
    beat = shipped_fleet.beat(1)
    wait_until(
        lambda: all(first_success_after(runs_of(pg_url), key, datetime.min.replace(tzinfo=UTC)) for key in keys),
        120,
        "the first sync of every dataset",
        shipped_fleet,
    )
    upstream.fault = holding = Holding()
    resync(shipped_fleet, *keys[:4])  # two per host: every slot taken
    wait_until(
        lambda: len(holding.held) >= 4 and len(in_flight(pg_url, pids_of(worker))) == 4,
        90,
        "four manual syncs in flight, their requests held by the upstream",
        shipped_fleet,
    )
    resync(shipped_fleet, *keys[4:])
    waiting = wait_until(
        lambda: (
            (held := {kw["key"] for kw in held_syncs(broker) if kw.get("trigger") == "manual" and kw.get("host_waits")})
            == set(keys[4:])
            and held
        ),
        90,
        "the other manual syncs held by the worker, sent back to wait for their host",
        shipped_fleet,
    )
    moment = kill_whole_worker(worker, shipped_fleet)
    holding.released.set()
    recovery = wait_synced_again(set(keys), moment, pg_url, shipped_fleet)
    os.killpg(beat.pid, signal.SIGTERM)
    beat.wait(30)
    results.update(waiting_at_kill=sorted(waiting), recovery_seconds=recovery)
    assert max(recovery[key] for key in waiting) <= TARGET, recovery
    assert max(recovery.values()) <= TARGET, recovery
    assert_versions_consistent(pg_url)


def resync(fleet: CeleryProcesses, *keys: str) -> None:
    queued = fleet.cli("resync", *keys)
    assert queued.returncode == 0, queued.stdout + queued.stderr

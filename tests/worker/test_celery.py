"""Celery worker and beat as real processes on a real Redis, against SQLite and PostgreSQL stores."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from models.db import session_factory
from models.schema import Dataset, SyncRun
from tests.conftest import expected_result
from tests.servers import RedisServer
from tests.upstream import Scripted, Upstream
from tests.worker.celery_harness import CeleryProcesses, pool_children, wait_until, write_catalogue

pytestmark = [pytest.mark.slow, pytest.mark.redis]
TRUSTS = "https://api.rcpch.ac.uk/nhs-organisations/v1/trusts/"
REGIONS = "https://api.rcpch.ac.uk/nhs-organisations/v1/nhs_england_regions/extended/"


@pytest.fixture
def harness(
    store_url: str, redis_server: RedisServer, upstream: Upstream, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[CeleryProcesses]:
    redis.Redis.from_url(redis_server.url()).flushall()
    keys = getattr(request, "param", ["nhs_trusts", "nhs_england_regions", "ethnic_category"])
    catalogue = write_catalogue(tmp_path / "catalogue.toml", keys)
    processes = CeleryProcesses(
        {
            "DATASYNC_DATABASE_URL": store_url,
            "DATASYNC_BROKER_URL": redis_server.url(),
            "DATASYNC_CATALOGUE": str(catalogue),
            "DATASYNC_URL_REWRITES": upstream.rewrites(),
            "DATASYNC_BEAT_INTERVAL_SECONDS": "1",
            "DATASYNC_DUE_JITTER_SECONDS": "0.5",
            "DATASYNC_RETRY_BACKOFF_SECONDS": "0.5",
            "DATASYNC_RETRY_BACKOFF_MAX_SECONDS": "2",
            "DATASYNC_LEASE_SECONDS": "6",
            "DATASYNC_TASK_SOFT_TIME_LIMIT": "8",
            "DATASYNC_TASK_TIME_LIMIT": "9",
            "DATASYNC_REQUEST_DEADLINE_SECONDS": "6",
            "DATASYNC_HOST_RATE_PER_SECOND": "50",
        },
        tmp_path,
    )
    processes.catalogue_path = catalogue
    yield processes
    processes.stop()


def store_runs(store_url: str, key: str) -> list[SyncRun]:
    with session_factory(store_url)() as session:
        return list(session.scalars(select(SyncRun).where(SyncRun.dataset_key == key).order_by(SyncRun.id)))


def store_dataset(store_url: str, key: str) -> Dataset | None:
    with session_factory(store_url)() as session:
        return session.scalars(select(Dataset).where(Dataset.key == key)).first()


def wait_for_request_in_flight(harness: CeleryProcesses, store_url: str, upstream: Upstream) -> None:
    """Kill only once the sync is recorded running and its request has reached the upstream."""
    wait_until(
        lambda: upstream.hits(TRUSTS) and [r for r in store_runs(store_url, "nhs_trusts") if r.status == "running"],
        60,
        "the sync's request to reach the upstream",
        harness,
    )


def test_beat_keeps_a_changed_upstream_in_sync_without_anyone_acting(
    harness: CeleryProcesses, store_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    write_catalogue(harness.catalogue_path, ["nhs_england_regions"], frequency_hours=0.001)
    harness.worker("w1")
    harness.beat(1)
    created = wait_until(
        lambda: store_dataset(store_url, "nhs_england_regions"), 30, "the first scheduled sync", harness
    )
    assert created.options == expected_result("nhs_england_regions")["options"]
    upstream.set_body(REGIONS, upstream.body_for(upstream.url_path(REGIONS)).replace(b'"London"', b'"Greater London"'))
    updated = wait_until(
        lambda: (d := store_dataset(store_url, "nhs_england_regions")) and d.version == 2 and d,
        30,
        "the change upstream to land",
        harness,
    )
    assert "Greater London" in updated.options.values()
    assert {run.trigger for run in store_runs(store_url, "nhs_england_regions")} == {"schedule"}


def test_manual_resync_wait_lands_and_reports(harness: CeleryProcesses, store_url: str) -> None:
    harness.worker("w1")
    result = harness.cli("resync", "nhs_trusts", "ethnic_category", "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr + harness.logs()
    outcomes = {outcome["key"]: outcome for outcome in json.loads(result.stdout)}
    assert {key: o["status"] for key, o in outcomes.items()} == {"nhs_trusts": "created", "ethnic_category": "created"}
    assert store_dataset(store_url, "ethnic_category").options == expected_result("ethnic_category")["options"]
    assert [run.trigger for run in store_runs(store_url, "nhs_trusts")] == ["manual"]


def test_transient_failures_retry_then_land(harness: CeleryProcesses, store_url: str, upstream: Upstream) -> None:
    upstream.script(TRUSTS, Scripted(status=503), Scripted(status=503, headers={"Retry-After": "1"}))
    harness.worker("w1")
    result = harness.cli("resync", "nhs_trusts", "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr + harness.logs()
    runs = store_runs(store_url, "nhs_trusts")
    assert [(r.status, r.attempt, r.will_retry) for r in runs] == [
        ("failed", 1, True),
        ("failed", 2, True),
        ("created", 3, False),
    ]
    assert runs[0].error_kind == "http_503"
    assert len(upstream.hits(TRUSTS)) == 3


def test_permanent_failure_does_not_retry(harness: CeleryProcesses, store_url: str, upstream: Upstream) -> None:
    upstream.script(TRUSTS, Scripted(status=404))
    harness.worker("w1")
    result = harness.cli("resync", "nhs_trusts", "--wait", "--json")
    assert result.returncode == 1
    [outcome] = json.loads(result.stdout)
    assert (outcome["status"], outcome["error_kind"]) == ("failed", "http_404")
    assert [(r.status, r.will_retry) for r in store_runs(store_url, "nhs_trusts")] == [("failed", False)]
    assert len(upstream.hits(TRUSTS)) == 1
    assert store_dataset(store_url, "nhs_trusts") is None


def test_worker_killed_mid_sync_is_redelivered_and_completes_once(
    harness: CeleryProcesses, store_url: str, upstream: Upstream
) -> None:
    upstream.script(TRUSTS, Scripted(delay=30))
    worker = harness.worker("w1", concurrency=1)
    wait_until(lambda: pool_children(worker), 30, "the worker's pool process", harness)
    harness.cli("resync", "nhs_trusts")
    wait_for_request_in_flight(harness, store_url, upstream)
    for child in pool_children(worker):
        os.kill(child.pid, signal.SIGKILL)
    dataset = wait_until(lambda: store_dataset(store_url, "nhs_trusts"), 60, "the redelivered sync", harness)
    assert dataset.version == 1
    assert dataset.options == expected_result("nhs_trusts")["options"]
    statuses = [(r.status, r.error_kind) for r in store_runs(store_url, "nhs_trusts") if r.status != "skipped"]
    assert statuses == [("failed", "abandoned"), ("created", None)]


def test_two_workers_and_two_beats_sync_each_due_dataset_once(
    harness: CeleryProcesses, store_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.script(TRUSTS, Scripted(delay=3))  # a slow sync that overlaps several beat ticks
    for name in ("w1", "w2"):
        harness.worker(name)
    harness.beat(1)
    # The second beat uses Celery's default scheduler: it ignores RedBeat's lock, like a beat
    # misconfigured by hand, so both fan out sync_due every second.
    harness.beat(2, "--scheduler", "celery.beat:PersistentScheduler", f"--schedule={tmp_path / 'beat2'}")
    keys = ["nhs_trusts", "nhs_england_regions", "ethnic_category"]
    wait_until(lambda: all(store_dataset(store_url, key) for key in keys), 60, "every dataset", harness)
    time.sleep(5)  # several more ticks from both beats
    for key in keys:
        runs = [r for r in store_runs(store_url, key) if r.status != "skipped"]
        assert [(r.status, r.trigger) for r in runs] == [("created", "schedule")], key
        assert store_dataset(store_url, key).version == 1
    assert "Sending due task sync-due" in (tmp_path / "beat-3.log").read_text()
    assert "Sending due task sync-due" in (tmp_path / "beat-2.log").read_text()


def test_whole_worker_killed_mid_sync_is_restored_to_another_worker(
    harness: CeleryProcesses, store_url: str, upstream: Upstream
) -> None:
    harness.env["DATASYNC_VISIBILITY_TIMEOUT"] = "12"
    upstream.script(TRUSTS, Scripted(delay=30))
    first = harness.worker("w1", concurrency=1)
    harness.cli("resync", "nhs_trusts")
    wait_for_request_in_flight(harness, store_url, upstream)
    os.killpg(first.pid, signal.SIGKILL)  # main process and pool: nothing acks or rejects the message
    first.wait(10)
    harness.worker("w2", concurrency=1)
    dataset = wait_until(lambda: store_dataset(store_url, "nhs_trusts"), 90, "the restored sync", harness)
    assert dataset.version == 1
    assert dataset.options == expected_result("nhs_trusts")["options"]
    statuses = [(r.status, r.error_kind) for r in store_runs(store_url, "nhs_trusts") if r.status != "skipped"]
    assert statuses == [("failed", "abandoned"), ("created", None)]


def test_scheduled_retries_run_at_their_countdown_despite_the_failure_pause(
    harness: CeleryProcesses, store_url: str, upstream: Upstream
) -> None:
    """Beat's first attempt fails twice; each retry runs (not `not_due`), and the third lands."""
    write_catalogue(harness.catalogue_path, ["nhs_trusts"])
    upstream.script(TRUSTS, Scripted(status=503), Scripted(status=503, headers={"Retry-After": "1"}))
    # Beat only once the worker consumes: a scan's message that waits past its mark (its jitter plus
    # 10 s) is queued again, and that harmless duplicate of attempt 1 is skipped as `not_due`.
    harness.wait_ready(harness.worker("w1"))
    harness.beat(1)
    wait_until(lambda: store_dataset(store_url, "nhs_trusts"), 180, "the retried scheduled sync", harness)
    runs = store_runs(store_url, "nhs_trusts")
    attempts = [(r.status, r.attempt, r.will_retry, r.trigger) for r in runs if r.status != "skipped"]
    assert attempts == [
        ("failed", 1, True, "schedule"),
        ("failed", 2, True, "schedule"),
        ("created", 3, False, "schedule"),
    ]
    assert not [r for r in runs if r.error_kind == "not_due" and r.attempt > 1]  # no retry held back by the pause
    assert len(upstream.hits(TRUSTS)) == 3


def test_a_killed_workers_sync_is_closed_and_requeued_by_the_next_scan(
    harness: CeleryProcesses, store_url: str, upstream: Upstream
) -> None:
    """No broker redelivery (1 h visibility timeout): beat's scan brings the dataset back, within the wait's
    bound (lease 6 s, scans every second, a second worker to start on a busy machine), far inside the hour."""
    write_catalogue(harness.catalogue_path, ["nhs_trusts"])
    harness.env["DATASYNC_VISIBILITY_TIMEOUT"] = "3600"
    upstream.script(TRUSTS, Scripted(delay=30))
    first = harness.worker("w1", concurrency=1)
    harness.beat(1)
    wait_for_request_in_flight(harness, store_url, upstream)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    harness.worker("w2", concurrency=1)
    dataset = wait_until(lambda: store_dataset(store_url, "nhs_trusts"), 180, "the re-queued sync", harness)
    assert dataset.version == 1
    statuses = [(r.status, r.error_kind, r.will_retry) for r in store_runs(store_url, "nhs_trusts")]
    assert [s for s in statuses if s[0] != "skipped"] == [("failed", "abandoned", True), ("created", None, False)]

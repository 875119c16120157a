"""Task-level behaviour that needs no broker: run eagerly in this process."""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from models.schema import SyncRun, SyncState
from models.types import utcnow
from tests.servers import RedisServer
from tests.upstream import Scripted, Upstream
from tests.worker.celery_harness import write_catalogue
from worker import tasks
from worker.catalogue import CatalogueError
from worker.settings import Settings, get_settings


@pytest.fixture
def worker_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    catalogue = write_catalogue(tmp_path / "catalogue.toml", ["nhs_england_regions"])
    monkeypatch.setenv("DATASYNC_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATASYNC_URL_REWRITES", settings.url_rewrites)
    monkeypatch.setenv("DATASYNC_CATALOGUE", str(catalogue))
    get_settings.cache_clear()
    tasks._process.clear()
    yield catalogue
    tasks._process.clear()


def test_a_key_missing_from_the_workers_catalogue_is_recorded(worker_env: Path, sessions) -> None:
    result = tasks.sync_dataset_task.apply(kwargs={"key": "not_here", "trigger": "manual"}).get()
    assert (result["status"], result["error_kind"]) == ("failed", "unknown_key")
    with sessions() as session:
        run = session.scalars(select(SyncRun).where(SyncRun.dataset_key == "not_here")).one()
    assert (run.status, run.trigger) == ("failed", "manual") and "not_here" in run.error_message


def test_a_broken_catalogue_edit_keeps_the_last_good_catalogue(worker_env: Path) -> None:
    assert tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions"}).get()["status"] == "created"
    worker_env.write_text(worker_env.read_text() + "\n[[datasets]]\nkey = 'broken'\n")
    outcome = tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions", "force": True}).get()
    assert outcome["status"] == "unchanged"


def test_pool_processes_inherit_the_catalogue_read_at_worker_start(
    worker_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks._read_catalogue_before_forking()

    def read_again(*_: object, **__: object) -> None:
        raise AssertionError("a pool process read the unchanged catalogue again")

    monkeypatch.setattr(tasks, "load_catalogue", read_again)
    readable, writable = os.pipe()
    child = os.fork()
    if child == 0:  # a pool process, forked from the worker's main process as prefork does
        try:
            found = "nhs_england_regions" in tasks.process_context()[1].by_key()
        except BaseException:
            found = False
        os.write(writable, b"yes" if found else b"no")
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(readable, 3) == b"yes"


def test_sync_due_enqueues_only_what_is_due(worker_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[dict] = []
    monkeypatch.setattr(tasks.sync_dataset_task, "apply_async", lambda **options: queued.append(options))
    assert tasks.sync_due_task.apply().get() == ["nhs_england_regions"]
    assert queued[0]["kwargs"]["trigger"] == "schedule" and 0 <= queued[0]["countdown"] <= 60
    tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions"}).get()
    assert tasks.sync_due_task.apply().get() == []


def test_a_new_process_with_a_broken_catalogue_recovers_once_it_is_fixed(worker_env: Path) -> None:
    good = worker_env.read_text()
    worker_env.write_text(good + "\n[[datasets]]\nkey = 'broken'\n")
    for _ in range(2):  # every task fails clearly while the file is broken, none with a KeyError
        with pytest.raises(CatalogueError):
            tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions"}).get()
    worker_env.write_text(good)
    os.utime(worker_env, (time.time() + 5, time.time() + 5))
    assert tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions"}).get()["status"] == "created"


@pytest.mark.parametrize("retention_days, deleted", [("0", 0), ("90", 1)])
def test_prune_runs_task_follows_the_retention_setting(
    retention_days: str, deleted: int, worker_env: Path, sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = utcnow() - timedelta(days=100)
    with sessions.begin() as session:
        session.add(SyncRun(dataset_key="a", trigger="cli", status="skipped", started_at=old))
    monkeypatch.setenv("DATASYNC_RUN_RETENTION_DAYS", retention_days)
    get_settings.cache_clear()
    assert tasks.prune_runs_task.apply().get() == deleted


def test_one_entry_that_cannot_be_judged_does_not_stop_the_scan(
    worker_env: Path, sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_catalogue(worker_env, ["nhs_england_regions", "london_boroughs"])
    with sessions.begin() as session:  # a corrupt row: its next due time overflows the calendar
        session.add(SyncState(dataset_key="nhs_england_regions", last_success_at=datetime(9999, 12, 31, tzinfo=UTC)))
    monkeypatch.setattr(tasks.sync_dataset_task, "apply_async", lambda **options: None)
    assert tasks.sync_due_task.apply().get() == ["london_boroughs"]


def test_the_task_takes_refetch_and_accept_changes_and_old_messages_still_work(
    worker_env: Path, upstream: Upstream
) -> None:
    url = "https://api.rcpch.ac.uk/nhs-organisations/v1/nhs_england_regions/extended/"
    assert tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions"}).get()["status"] == "created"
    old_style = tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions", "force": True}).get()
    assert old_style["status"] == "unchanged" and upstream.hits(url)[-1].get("If-None-Match")
    kwargs = {"key": "nhs_england_regions", "force": True, "refetch": True, "accept_changes": True}
    assert tasks.sync_dataset_task.apply(kwargs=kwargs).get()["status"] == "unchanged"
    assert "If-None-Match" not in upstream.hits(url)[-1]


def test_enqueued_syncs_carry_the_three_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[dict] = []
    monkeypatch.setattr(tasks.sync_dataset_task, "apply_async", lambda **options: queued.append(options["kwargs"]))
    tasks.enqueue_syncs(["a", "b"], True, "manual", accept_changes=True)
    assert [(k["key"], k["force"], k["refetch"], k["accept_changes"]) for k in queued] == [
        ("a", True, False, True),
        ("b", True, False, True),
    ]


def test_a_task_whose_host_has_no_room_goes_back_to_the_queue(
    worker_env: Path, sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It must not sleep in a pool process while datasets of other hosts wait behind it."""
    from celery.exceptions import Retry

    ctx, _ = tasks.process_context()
    monkeypatch.setattr(ctx.http.throttle, "wait_estimate", lambda host: math.inf)  # every slot taken
    requeued: list[dict] = []
    monkeypatch.setattr(tasks.sync_dataset_task, "retry", lambda **options: requeued.append(options) or Retry())
    with pytest.raises(Retry):
        tasks.sync_dataset_task(key="nhs_england_regions")
    [options] = requeued
    assert 2.0 <= options["countdown"] <= 3.0 and options["kwargs"]["host_waits"] == 1
    with sessions() as session:
        assert session.scalars(select(SyncRun)).all() == []  # nothing started, no lease taken


def test_a_retry_that_ends_in_a_skip_no_longer_promises_a_retry(worker_env: Path, sessions) -> None:
    from models import lease

    with sessions.begin() as session:
        failed = SyncRun(dataset_key="nhs_england_regions", trigger="schedule", status="failed", started_at=utcnow())
        failed.will_retry = True
        session.add(failed)
        lease.ensure_state(session, "nhs_england_regions").paused = True  # paused while the retry waited
    outcome = tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions", "attempt": 2}).get()
    assert outcome["error_kind"] == "paused"
    with sessions() as session:
        runs = session.scalars(select(SyncRun).order_by(SyncRun.id)).all()
    assert [(r.status, r.attempt, r.will_retry) for r in runs] == [("failed", 1, False), ("skipped", 2, False)]


@pytest.fixture
def marked_env(worker_env: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    """``worker_env`` with a Redis broker, so pending marks are kept; messages are captured, not sent."""
    monkeypatch.setenv("DATASYNC_BROKER_URL", redis_server.url())
    get_settings.cache_clear()
    client = redis.Redis.from_url(redis_server.url())
    client.flushall()
    return client


def add_failed_attempt(
    sessions, attempt: int, finished_ago: timedelta, will_retry: bool = True, trigger: str = "schedule"
) -> SyncRun:
    """A failed attempt of nhs_england_regions' chain, as the pipeline records it (the failure pause now holds)."""
    from models import lease

    finished = utcnow() - finished_ago
    with sessions.begin() as session:
        run = SyncRun(
            dataset_key="nhs_england_regions",
            trigger=trigger,
            status="failed",
            started_at=finished - timedelta(seconds=2),
            finished_at=finished,
            attempt=attempt,
            will_retry=will_retry,
        )
        session.add(run)
        state = lease.ensure_state(session, "nhs_england_regions")
        state.last_status, state.last_attempt_at = "failed", finished
    return run


def capture_messages(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    queued: list[dict] = []
    monkeypatch.setattr(tasks.sync_dataset_task, "apply_async", lambda **options: queued.append(options))
    return queued


def test_the_scan_requeues_a_retry_lost_with_its_worker_as_the_next_attempt(
    marked_env: redis.Redis, sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mark (it outlived the retry's ETA) and no lease: the message is gone; the failure pause does not wait."""
    failed = add_failed_attempt(sessions, 1, timedelta(minutes=1))
    queued = capture_messages(monkeypatch)
    assert tasks.sync_due_task.apply().get() == ["nhs_england_regions"]
    [message] = queued
    assert message["kwargs"] == {
        "key": "nhs_england_regions",
        "trigger": "schedule",
        "requested_at": failed.started_at.isoformat(),
        "attempt": 2,
    }
    assert marked_env.exists("datasync:pending:nhs_england_regions")
    assert tasks.sync_due_task.apply().get() == []  # queued again once, not on every scan


def test_a_retry_still_marked_or_just_promised_is_left_alone(
    marked_env: redis.Redis, sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import pending

    add_failed_attempt(sessions, 1, timedelta(minutes=1))
    pending.hold("nhs_england_regions", 120)  # its worker is alive and holds it until its ETA
    queued = capture_messages(monkeypatch)
    assert tasks.sync_due_task.apply().get() == []
    pending.clear("nhs_england_regions")
    add_failed_attempt(sessions, 2, timedelta(seconds=1))  # its retry's mark may be being set right now
    assert tasks.sync_due_task.apply().get() == []
    add_failed_attempt(sessions, 1, timedelta(minutes=1), trigger="cli")  # `datasync sync` retries in-process
    assert tasks.sync_due_task.apply().get() == [] and queued == []


def test_a_failed_attempt_marks_its_retry_until_the_retrys_eta_plus_one_scan(
    marked_env: redis.Redis, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.exceptions import Retry

    upstream.fault = lambda path: Scripted(503)
    requeued: list[dict] = []
    monkeypatch.setattr(tasks.sync_dataset_task, "retry", lambda **options: requeued.append(options) or Retry())
    with pytest.raises(Retry):
        tasks.sync_dataset_task(key="nhs_england_regions")
    [options] = requeued
    assert options["kwargs"]["attempt"] == 2
    ttl = marked_env.pttl("datasync:pending:nhs_england_regions") / 1000
    assert options["countdown"] + 29 < ttl <= options["countdown"] + 30.01


def test_a_duplicate_retry_whose_chain_moved_on_is_skipped_and_keeps_the_promise(
    marked_env: redis.Redis, sessions, upstream: Upstream
) -> None:
    """Attempt 2 ran already and queued attempt 3; a second delivery of attempt 2 (restored by the broker) must
    neither sync again nor end the chain that attempt 3 still carries."""
    from worker import pending

    add_failed_attempt(sessions, 1, timedelta(minutes=2))
    add_failed_attempt(sessions, 2, timedelta(minutes=1))
    pending.hold("nhs_england_regions", 60)  # attempt 3's mark
    outcome = tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions", "attempt": 2}).get()
    assert (outcome["status"], outcome["error_kind"]) == ("skipped", "superseded")
    with sessions() as session:
        runs = session.scalars(select(SyncRun).order_by(SyncRun.id)).all()
    assert [(r.status, r.attempt, r.will_retry) for r in runs] == [
        ("failed", 1, True),
        ("failed", 2, True),
        ("skipped", 2, False),
    ]
    assert upstream.requests == [] and marked_env.exists("datasync:pending:nhs_england_regions")


def test_the_scan_marks_each_message_for_its_jitter_plus_one_scan(
    marked_env: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan-queued message lost with its worker is queued again one scan after its ETA, not ten scans later."""
    queued = capture_messages(monkeypatch)
    assert tasks.sync_due_task.apply().get() == ["nhs_england_regions"]
    ttl = marked_env.pttl("datasync:pending:nhs_england_regions") / 1000
    assert queued[0]["countdown"] + 29 < ttl <= queued[0]["countdown"] + 30.01

"""Task-level behaviour that needs no broker: run eagerly in this process."""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from models.schema import SyncRun, SyncState
from models.types import utcnow
from tests.upstream import Upstream
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

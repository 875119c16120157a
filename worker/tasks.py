"""Celery tasks: thin wrappers that call the same pipeline functions as the CLI.

Retries are decided here (the pipeline says whether a failure is transient); every attempt is
recorded by the pipeline as its own ``sync_runs`` row.
"""

from __future__ import annotations

import logging
import os
import random
from datetime import datetime, timedelta
from typing import Any

from celery import Task
from celery.result import AsyncResult
from celery.signals import beat_init
from celery.utils.log import get_task_logger
from sqlalchemy import select

from models import lease
from models.schema import SyncState
from models.types import utcnow
from publisher.publish import publish_new_versions
from worker.catalogue import Catalogue, CatalogueError, load_catalogue
from worker.celery_app import app
from worker.context import SyncContext, throttle_for
from worker.pipeline import is_due, sync_dataset
from worker.retry import retry_delay
from worker.runs import prune_runs, record_skip
from worker.settings import get_settings

log = get_task_logger(__name__)
MAX_BUSY_WAITS = 60
BUSY_POLL_SECONDS = 20  # look again this often: the sync holding the lease usually ends long before it expires

_process: dict[str, Any] = {}


def process_context() -> tuple[SyncContext, Catalogue]:
    """One sync context per worker process (created after fork), catalogue reloaded when edited."""
    settings = get_settings()
    if _process.get("pid") != os.getpid():
        _process.clear()
        _process.update(pid=os.getpid(), ctx=SyncContext.from_settings(settings, throttle_for(settings)))
    mtime = settings.catalogue.stat().st_mtime
    if _process.get("catalogue_mtime") != mtime:
        try:
            _process["catalogue"] = load_catalogue(settings.catalogue, settings.dataset_table().limits)
        except CatalogueError as exc:
            if "catalogue" not in _process:
                raise  # nothing good to fall back on: fail this task, try the file again next time
            log.error("catalogue edit rejected, still using the previous one: %s", exc)
        _process["catalogue_mtime"] = mtime
    return _process["ctx"], _process["catalogue"]


@app.task(bind=True, name="datasync.sync_dataset", max_retries=None, acks_late=True)
def sync_dataset_task(
    self: Task,
    key: str,
    force: bool = False,
    trigger: str = "schedule",
    requested_at: str | None = None,
    attempt: int = 1,
    busy_waits: int = 0,
) -> dict[str, Any]:
    ctx, catalogue = process_context()
    entry = catalogue.by_key().get(key)
    if entry is None:
        reason = f"{catalogue.path}: no dataset with key {key!r} in this worker's catalogue"
        return record_skip(ctx.sessions, key, trigger, ctx.worker_id, "unknown_key", reason, status="failed").to_json()
    settings = ctx.settings
    outcome = sync_dataset(
        entry,
        ctx,
        trigger=trigger,
        force=force,
        attempt=attempt,
        may_retry=attempt <= settings.max_retries,
        requested_at=datetime.fromisoformat(requested_at) if requested_at else None,
    )
    kwargs = {"key": key, "force": force, "trigger": trigger, "requested_at": requested_at}
    if outcome.will_retry:
        countdown = retry_delay(attempt, outcome.retry_after, settings)
        log.info("retrying %s in %.0f s (attempt %d failed: %s)", key, countdown, attempt, outcome.error)
        raise self.retry(kwargs={**kwargs, "attempt": attempt + 1, "busy_waits": busy_waits}, countdown=countdown)
    if outcome.error_kind == "busy" and busy_waits < MAX_BUSY_WAITS:
        countdown = min(lease.expires_in(ctx.sessions, key), BUSY_POLL_SECONDS) + random.uniform(1, 5)
        raise self.retry(kwargs={**kwargs, "attempt": attempt, "busy_waits": busy_waits + 1}, countdown=countdown)
    return outcome.to_json()


@app.task(name="datasync.sync_due")
def sync_due_task() -> list[str]:
    """Enqueue every due dataset, spread over the jitter window so one host is not hit at once."""
    ctx, catalogue = process_context()
    now = utcnow()
    with ctx.sessions() as session:
        states = {state.dataset_key: state for state in session.scalars(select(SyncState))}
    due = [
        entry.key
        for entry in catalogue.select()
        if is_due(entry, states.get(entry.key), now, ctx.settings)
        and not (entry.key in states and states[entry.key].lease_live(now))
    ]
    for key in due:
        sync_dataset_task.apply_async(
            kwargs={"key": key, "trigger": "schedule", "requested_at": now.isoformat()},
            countdown=random.uniform(0, ctx.settings.due_jitter_seconds),
        )
    if due:
        log.info("enqueued %d due dataset(s): %s", len(due), ", ".join(due))
    return due


@app.task(name="datasync.sync_many")
def sync_many_task(
    keys: list[str] | None = None, category: str | None = None, force: bool = False, trigger: str = "manual"
) -> list[str]:
    """Manual re-sync of a selection; returns the ids of the per-dataset tasks."""
    _, catalogue = process_context()
    return [result.id for result in enqueue_syncs([e.key for e in catalogue.select(keys, category)], force, trigger)]


@app.task(name="datasync.prune_runs")
def prune_runs_task() -> int:
    """Daily housekeeping: drop ``sync_runs`` rows older than DATASYNC_RUN_RETENTION_DAYS (0 keeps all)."""
    ctx, _ = process_context()
    days = ctx.settings.run_retention_days
    if not days:
        return 0
    deleted = prune_runs(ctx.sessions, utcnow() - timedelta(days=days))
    log.info("pruned %d sync_runs row(s) older than %d days", deleted, days)
    return deleted


@app.task(name="datasync.publish_new_versions")
def publish_new_versions_task() -> dict[str, str]:
    """With DATASYNC_PUBLISH_AUTO: publish new versions to the national data catalogue (publisher/)."""
    ctx, catalogue = process_context()
    if not (ctx.settings.publish_auto and ctx.settings.publish_url):
        return {}
    outcomes = publish_new_versions(catalogue, ctx.sessions, ctx.settings)
    for outcome in outcomes:
        log.log(logging.ERROR if outcome.failed else logging.INFO, "publish %s: %s", outcome.key, outcome.status)
    return {outcome.key: outcome.status for outcome in outcomes}


def enqueue_syncs(keys: list[str], force: bool, trigger: str) -> list[AsyncResult]:
    requested_at = utcnow().isoformat()
    return [
        sync_dataset_task.apply_async(
            kwargs={"key": key, "force": force, "trigger": trigger, "requested_at": requested_at}
        )
        for key in keys
    ]


@beat_init.connect
def _scan_at_start(sender: object = None, **_: object) -> None:
    """Scan for due datasets as soon as beat starts, not one beat interval later."""
    sync_due_task.apply_async(countdown=2)

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
from celery.exceptions import Retry
from celery.result import AsyncResult
from celery.signals import beat_init
from celery.utils.log import get_task_logger
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import lease
from models.db import reading
from models.schema import SyncRun, SyncState
from models.types import utcnow
from publisher.publish import publish_new_versions
from scrapers.http import host_of
from worker import pending, webhooks
from worker.catalogue import Catalogue, CatalogueEntry, CatalogueError, load_catalogue
from worker.celery_app import app
from worker.context import SyncContext, throttle_for
from worker.outcome import SyncOutcome
from worker.pipeline import is_due, sync_dataset
from worker.retry import end_retry_chain, retry_delay
from worker.runs import prune_runs, record_skip
from worker.settings import Settings, get_settings

log = get_task_logger(__name__)
MAX_BUSY_WAITS = 60
BUSY_POLL_SECONDS = 10  # look again this often: the sync holding the lease usually ends long before it expires
HOST_WAIT_LIMIT = 1.0  # a host whose next request slot is further off than this sends the task back to the queue
HOST_RECHECK_SECONDS = 2.0  # when every slot of the host is taken, look again this soon
MAX_HOST_WAITS = 500  # after this many round trips a task waits for its slot in the throttle like any request

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
    refetch: bool = False,
    accept_changes: bool = False,
    host_waits: int = 0,
) -> dict[str, Any]:
    ctx, catalogue = process_context()
    entry = catalogue.by_key().get(key)
    if entry is None:
        reason = f"{catalogue.path}: no dataset with key {key!r} in this worker's catalogue"
        return record_skip(ctx.sessions, key, trigger, ctx.worker_id, "unknown_key", reason, status="failed").to_json()
    kwargs = {"key": key, "force": force, "trigger": trigger, "requested_at": requested_at, "attempt": attempt}
    kwargs |= {"refetch": refetch, "accept_changes": accept_changes}
    waits = {"busy_waits": busy_waits, "host_waits": host_waits}
    host_wait = ctx.http.throttle.wait_estimate(host_of(entry.url))
    if host_wait > HOST_WAIT_LIMIT and host_waits < MAX_HOST_WAITS:
        # The host's budget is spent for now: free this process for other hosts' datasets.
        countdown = min(host_wait, HOST_RECHECK_SECONDS) + random.random()
        raise self.retry(kwargs={**kwargs, **waits, "host_waits": host_waits + 1}, countdown=countdown)
    pending.clear(key)
    settings = ctx.settings
    outcome = sync_dataset(
        entry,
        ctx,
        trigger=trigger,
        force=force,
        refetch=refetch,
        accept_changes=accept_changes,
        attempt=attempt,
        may_retry=attempt <= settings.max_retries,
        requested_at=datetime.fromisoformat(requested_at) if requested_at else None,
    )
    if outcome.will_retry:
        countdown = retry_delay(attempt, outcome.retry_after, settings)
        log.info("retrying %s in %.0f s (attempt %d failed: %s)", key, countdown, attempt, outcome.error)
        _queue_retry(self, ctx.sessions, outcome, {**kwargs, **waits, "attempt": attempt + 1}, countdown)
    elif outcome.error_kind == "busy" and busy_waits < MAX_BUSY_WAITS:
        countdown = min(lease.expires_in(ctx.sessions, key), BUSY_POLL_SECONDS) + random.uniform(1, 5)
        raise self.retry(kwargs={**kwargs, **waits, "busy_waits": busy_waits + 1}, countdown=countdown)
    elif attempt > 1 and outcome.status == "skipped":
        end_retry_chain(ctx.sessions, key)  # the chain ends here: no retry is queued any more
    return outcome.to_json()


def _queue_retry(
    task: Task, sessions: sessionmaker[Session], outcome: SyncOutcome, kwargs: dict[str, Any], countdown: float
) -> None:
    """Queue the next attempt; if the broker refuses it, the run must not promise a retry."""
    try:
        raise task.retry(kwargs=kwargs, countdown=countdown)
    except Retry:
        raise
    except Exception as exc:  # a broker outage: beat's scan picks the dataset up again later
        log.error("could not queue the retry of %s: %s", outcome.key, exc)
        end_retry_chain(sessions, outcome.key)
        outcome.will_retry = False


@app.task(name="datasync.sync_due")
def sync_due_task() -> list[str]:
    """Enqueue every due dataset, and retry every sync whose worker died (its lease ran out).

    Runs every beat interval, so a killed worker's datasets come back within one lease period
    plus one interval, whatever became of their messages.
    """
    ctx, catalogue = process_context()
    requeued = _requeue_abandoned(ctx, catalogue)
    now = utcnow()
    with reading(ctx.sessions)() as session:
        states = {state.dataset_key: state for state in session.scalars(select(SyncState))}
    due = [
        entry.key
        for entry in catalogue.select()
        if entry.key not in requeued and _due_now(entry, states.get(entry.key), now, ctx.settings)
    ]
    due = pending.mark(due)  # already queued and not started yet: one message is enough
    for key in due:
        sync_dataset_task.apply_async(
            kwargs={"key": key, "trigger": "schedule", "requested_at": now.isoformat()},
            countdown=random.uniform(0, ctx.settings.due_jitter_seconds),
        )
    if due:
        log.info("enqueued %d due dataset(s): %s", len(due), ", ".join(due))
    webhooks.scan(ctx.sessions, catalogue, ctx.settings, now)
    return requeued + due


def _requeue_abandoned(ctx: SyncContext, catalogue: Catalogue) -> list[str]:
    """Close runs left ``running`` by dead workers; queue their next attempt while retries remain."""
    known = catalogue.by_key()
    requeued: list[str] = []
    for run in lease.abandon_dead_runs(ctx.sessions):
        log.warning("sync of %s (run %d) was abandoned by %s", run.dataset_key, run.id, run.worker)
        if run.dataset_key not in known or run.attempt > ctx.settings.max_retries or run.dataset_key in requeued:
            continue
        sync_dataset_task.apply_async(
            kwargs={
                "key": run.dataset_key,
                "trigger": run.trigger if run.trigger in ("manual", "api") else "schedule",
                "requested_at": run.started_at.isoformat(),
                "attempt": run.attempt + 1,
            }
        )
        _promise_retry(ctx.sessions, run.id)
        pending.mark([run.dataset_key])
        requeued.append(run.dataset_key)
    return requeued


def _promise_retry(sessions: sessionmaker[Session], run_id: int) -> None:
    with sessions.begin() as session:
        session.execute(update(SyncRun).where(SyncRun.id == run_id).values(will_retry=True))


def _due_now(entry: CatalogueEntry, state: SyncState | None, now: datetime, settings: Settings) -> bool:
    """Due and not being synced; one entry or state row that cannot be judged must not stop the scan."""
    try:
        return is_due(entry, state, now, settings) and not (state is not None and state.lease_live(now))
    except Exception:
        log.exception("cannot tell whether %s is due; left out of this scan", entry.key)
        return False


@app.task(name="datasync.sync_many")
def sync_many_task(
    keys: list[str] | None = None,
    category: str | None = None,
    force: bool = False,
    trigger: str = "manual",
    refetch: bool = False,
    accept_changes: bool = False,
) -> list[str]:
    """Manual re-sync of a selection; returns the ids of the per-dataset tasks."""
    _, catalogue = process_context()
    keys = [entry.key for entry in catalogue.select(keys, category)]
    return [result.id for result in enqueue_syncs(keys, force, trigger, refetch=refetch, accept_changes=accept_changes)]


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


def enqueue_syncs(
    keys: list[str], force: bool, trigger: str, *, refetch: bool = False, accept_changes: bool = False
) -> list[AsyncResult]:
    requested_at = utcnow().isoformat()
    options = {"force": force, "refetch": refetch, "accept_changes": accept_changes}
    return [
        sync_dataset_task.apply_async(kwargs={"key": key, "trigger": trigger, "requested_at": requested_at, **options})
        for key in keys
    ]


@beat_init.connect
def _scan_at_start(sender: object = None, **_: object) -> None:
    """Scan for due datasets as soon as beat starts, not one beat interval later."""
    sync_due_task.apply_async(countdown=2)

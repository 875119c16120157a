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
from celery.signals import beat_init, worker_init
from celery.utils.log import get_task_logger
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import lease
from models.db import reading
from models.schema import SyncRun, SyncState
from models.types import utcnow
from publisher.publish import publish_new_versions
from scrapers.http import host_of
from worker import cli_promises, held, pending, webhooks
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

SUPERSEDED = "a duplicate delivery of a retry: its chain has moved on (a later attempt ran, or the chain ended)"

_process: dict[str, Any] = {}


def process_context() -> tuple[SyncContext, Catalogue]:
    """One sync context per worker process (created after fork), catalogue reloaded when edited."""
    settings = get_settings()
    if _process.get("pid") != os.getpid():
        _process.update(pid=os.getpid(), ctx=SyncContext.from_settings(settings, throttle_for(settings)))
    return _process["ctx"], _current_catalogue(settings)


def _current_catalogue(settings: Settings) -> Catalogue:
    """The catalogue as last read; kept across a fork, so a new pool process reads the file only if it changed."""
    mtime = settings.catalogue.stat().st_mtime
    if _process.get("catalogue_mtime") != mtime:
        try:
            _process["catalogue"] = load_catalogue(settings.catalogue, settings.dataset_table().limits)
        except CatalogueError as exc:
            if "catalogue" not in _process:
                raise  # nothing good to fall back on: fail this task, try the file again next time
            log.error("catalogue edit rejected, still using the previous one: %s", exc)
        _process["catalogue_mtime"] = mtime
    catalogue: Catalogue = _process["catalogue"]
    return catalogue


@worker_init.connect
def _read_catalogue_before_forking(sender: object = None, **_: object) -> None:
    """Pool processes fork from the worker's main process and inherit what it read here.

    A 10,000-entry catalogue takes 1-2 s to read; without this every new pool process (one per
    DATASYNC_MAX_TASKS_PER_CHILD tasks) paid that on its first task.
    """
    try:
        _current_catalogue(get_settings())
    except (CatalogueError, OSError) as exc:
        log.error("catalogue not read at worker start; each pool process will try it: %s", exc)


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
        raise _send_back(self, {**kwargs, **waits, "host_waits": host_waits + 1}, countdown)
    if attempt > 1 and not _retry_awaited(ctx.sessions, key, attempt):
        return record_skip(
            ctx.sessions, key, trigger, ctx.worker_id, "superseded", SUPERSEDED, attempt=attempt
        ).to_json()  # a duplicate of a retry: the chain (and its marks) belong to another message now
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
        raise _send_back(self, {**kwargs, **waits, "busy_waits": busy_waits + 1}, countdown)
    elif attempt > 1 and outcome.status == "skipped":
        end_retry_chain(ctx.sessions, key)  # the chain ends here: no retry is queued any more
    return outcome.to_json()


def _queue_retry(
    task: Task, sessions: sessionmaker[Session], outcome: SyncOutcome, kwargs: dict[str, Any], countdown: float
) -> None:
    """Queue the next attempt; if the broker refuses it, the run must not promise a retry."""
    try:
        raise _send_back(task, kwargs, countdown)
    except Retry:
        raise
    except Exception as exc:  # a broker outage: beat's scan picks the dataset up again later
        log.error("could not queue the retry of %s: %s", outcome.key, exc)
        pending.clear(outcome.key)
        end_retry_chain(sessions, outcome.key)
        outcome.will_retry = False


def _send_back(task: Task, kwargs: dict[str, Any], countdown: float) -> Retry:
    """Queue this task again after ``countdown``, its dataset marked as queued until then (``pending``)."""
    pending.hold(kwargs["key"], countdown)
    return task.retry(kwargs=kwargs, countdown=countdown)


def _retry_awaited(sessions: sessionmaker[Session], key: str, attempt: int) -> bool:
    """Whether the dataset's newest finished run is the attempt before ``attempt`` and still promises it.

    A retry can be delivered twice: the scan queues it again once its message is presumed lost
    (``pending``), and the broker restores the original after its visibility timeout. Whichever
    comes second finds the chain moved on (a newer attempt finished, or the chain ended) and is
    skipped, so a chain never forks into two.
    """
    finished = SyncRun.status.not_in(("running", "skipped"))
    with reading(sessions)() as session:
        newest = session.execute(
            select(SyncRun.attempt, SyncRun.will_retry)
            .where(SyncRun.dataset_key == key, finished)
            .order_by(SyncRun.id.desc())
            .limit(1)
        ).first()
    return newest is not None and newest.attempt == attempt - 1 and bool(newest.will_retry)


@app.task(name="datasync.sync_due")
def sync_due_task() -> list[str]:
    """Enqueue every due dataset, and retry every sync whose worker died (its lease ran out) or
    whose queued retry was lost with its worker (``pending``); hand back the messages no live
    worker holds (``held``: a manual re-sync among them has nothing else to bring it back).

    Runs every beat interval, so a killed worker's datasets come back within one lease period
    plus one interval, whatever became of their messages.
    """
    ctx, catalogue = process_context()
    held.hand_back_lost_messages(app)
    requeued = _requeue_abandoned(ctx, catalogue)
    now = utcnow()
    if closed := cli_promises.close_broken(ctx.sessions, now, ctx.settings):
        log.warning("the datasync sync that promised a retry of %s is gone: promise closed", ", ".join(closed))
    with reading(ctx.sessions)() as session:
        states = {state.dataset_key: state for state in session.scalars(select(SyncState))}
    requeued += _requeue_lost_retries(ctx, catalogue, states, now, set(requeued))
    jitter = ctx.settings.due_jitter_seconds
    countdowns = {
        entry.key: random.uniform(0, jitter)
        for entry in catalogue.select()
        if entry.key not in requeued and _due_now(entry, states.get(entry.key), now, ctx.settings)
    }
    due = pending.mark(countdowns)  # already queued and not started yet: one message is enough
    for key in due:
        sync_dataset_task.apply_async(
            kwargs={"key": key, "trigger": "schedule", "requested_at": now.isoformat()}, countdown=countdowns[key]
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
        _promise_retry(ctx.sessions, run.id)  # before the message: its start checks the promise
        _queue_next_attempt(run)
        requeued.append(run.dataset_key)
    return requeued


def _requeue_lost_retries(
    ctx: SyncContext, catalogue: Catalogue, states: dict[str, SyncState], now: datetime, skip: set[str]
) -> list[str]:
    """Queue again each retry that the dataset's newest run still promises but whose message is gone.

    A retry waiting out its backoff sits in a worker's memory; a worker killed then takes it along
    until the broker's visibility timeout. Its mark (``pending``) outlives the retry's ETA by one
    scan interval, so no mark and no lease means lost: the next attempt of the same chain is
    queued at once, without waiting for the failure pause. A run finished less than that ago is
    left for the next scan (its retry's mark may be being set right now).
    """
    if not pending.available():
        return []  # without marks a lost retry cannot be told from a waiting one
    known = catalogue.by_key()
    settled = now - timedelta(milliseconds=pending.ttl_ms(0))
    promised = {
        run.dataset_key: run
        for run in _promised_retries(ctx.sessions, now - timedelta(seconds=ctx.settings.visibility_timeout))
        if run.dataset_key in known
        and run.dataset_key not in skip
        and run.finished_at is not None
        and run.finished_at <= settled
        and not _leased(states.get(run.dataset_key), now)
    }
    lost = pending.mark(dict.fromkeys(promised, 0.0))
    for key in lost:
        log.warning("the retry of %s (after run %d) was lost with its worker; queued again", key, promised[key].id)
        _queue_next_attempt(promised[key])
    return lost


def _promised_retries(sessions: sessionmaker[Session], since: datetime) -> list[SyncRun]:
    """Each dataset's newest finished run started since ``since``, where it promises a broker-queued retry.

    Older ones need no help: by then the broker has restored a lost message by itself. A ``cli``
    run's retry waits inside ``datasync sync``, not on the broker, and has no mark to judge it by.
    """
    finished = SyncRun.status.not_in(("running", "skipped"))
    newest = select(func.max(SyncRun.id)).where(finished, SyncRun.started_at >= since).group_by(SyncRun.dataset_key)
    promised = SyncRun.id.in_(newest) & SyncRun.will_retry & (SyncRun.trigger != "cli")
    with reading(sessions)() as session:
        return list(session.scalars(select(SyncRun).where(promised)))


def _leased(state: SyncState | None, now: datetime) -> bool:
    return state is not None and state.lease_live(now)


def _queue_next_attempt(run: SyncRun) -> None:
    """Queue the attempt after ``run`` in its chain: same trigger, requested when ``run`` started
    (a success since then makes it ``done``), its dataset marked as queued."""
    pending.hold(run.dataset_key, 0.0)
    sync_dataset_task.apply_async(
        kwargs={
            "key": run.dataset_key,
            "trigger": run.trigger if run.trigger in ("manual", "api") else "schedule",
            "requested_at": run.started_at.isoformat(),
            "attempt": run.attempt + 1,
        }
    )


def _promise_retry(sessions: sessionmaker[Session], run_id: int) -> None:
    with sessions.begin() as session:
        session.execute(update(SyncRun).where(SyncRun.id == run_id).values(will_retry=True))


def _due_now(entry: CatalogueEntry, state: SyncState | None, now: datetime, settings: Settings) -> bool:
    """Due and not being synced; one entry or state row that cannot be judged must not stop the scan."""
    try:
        return is_due(entry, state, now, settings) and not _leased(state, now)
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

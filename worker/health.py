"""One health model for every monitoring surface: the CLI, the HTTP API, metrics, the status page
and webhooks all ask here whether a dataset, or the system, is well, so they never disagree.

Everything is computed from the store (and, for the system, from the broker) at the moment asked,
with ``now`` passed in, so tests move time instead of waiting for it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from models.db import is_current, reading
from models.monitoring import SchedulerHeartbeat
from models.schema import SyncRun, SyncState
from worker.catalogue import Catalogue, CatalogueEntry
from worker.runs import latest_finished_runs
from worker.settings import Settings

Clock = Callable[[], datetime]
STATES = ("ok", "stale", "failing", "held", "paused", "never_synced", "disabled")
HEARTBEAT_MISSES = 3
QUEUE = "datasync"
SENT_AT_HEADER = "datasync_sent_at"


@dataclass(frozen=True)
class DatasetHealth:
    """A dataset's one state, why, and the facts an operator acts on."""

    key: str
    state: str
    reason: str
    last_success_at: datetime | None
    next_due_at: datetime | None
    consecutive_failures: int
    last_error_kind: str | None
    last_error: str | None
    stale_after_hours: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "last_success_at": iso(self.last_success_at),
            "next_due_at": iso(self.next_due_at),
            "consecutive_failures": self.consecutive_failures,
            "stale_after_hours": self.stale_after_hours,
            "last_error": {"kind": self.last_error_kind, "message": self.last_error} if self.last_error_kind else None,
        }


def assess(
    key: str,
    entry: CatalogueEntry | None,
    state: SyncState | None,
    last_run: SyncRun | None,
    now: datetime,
    settings: Settings,
) -> DatasetHealth:
    """The state of one dataset; the first that applies wins, most actionable first."""
    failures = state.consecutive_failures if state else 0
    last_success = state.last_success_at if state else None
    erred = last_run is not None and last_run.status in ("failed", "held")
    kind, message = (last_run.error_kind, last_run.error_message) if erred and last_run else (None, None)
    stale_after = entry.stale_after if entry else None
    status, reason = _state(entry, state, failures, last_success, kind, now, settings)
    return DatasetHealth(
        key=key,
        state=status,
        reason=reason,
        last_success_at=last_success,
        next_due_at=next_due(entry, state, now, settings) if status not in ("disabled", "paused") else None,
        consecutive_failures=failures,
        last_error_kind=kind,
        last_error=message,
        stale_after_hours=stale_after,
    )


def _state(
    entry: CatalogueEntry | None,
    state: SyncState | None,
    failures: int,
    last_success: datetime | None,
    error_kind: str | None,
    now: datetime,
    settings: Settings,
) -> tuple[str, str]:
    if entry is None:
        return "disabled", "not in the catalogue"
    if not entry.enabled:
        return "disabled", "disabled in the catalogue"
    if state is not None and state.paused:
        return "paused", state.paused_reason or "paused by an operator"
    if state is not None and state.held_options is not None:
        return "held", state.held_reason or "a change waits for review"
    if failures >= settings.failing_after:
        return "failing", f"the last {failures} attempts failed ({error_kind or 'error'})"
    if last_success is None:
        return "never_synced", "never synced" + (f"; the last attempt failed ({error_kind})" if error_kind else "")
    age = now - last_success
    if age > timedelta(hours=entry.stale_after):
        return "stale", f"no success for {format_age(age)} (stale after {entry.stale_after:g} h)"
    return "ok", f"last success {format_age(age)} ago"


def next_due(entry: CatalogueEntry | None, state: SyncState | None, now: datetime, settings: Settings) -> datetime:
    """When beat will next queue the dataset: its frequency after the last success, or the failure
    pause after a refused attempt, whichever is later (the sync window is not applied)."""
    if entry is None or state is None or state.last_success_at is None:
        due = now
    else:
        due = state.last_success_at + timedelta(hours=entry.frequency_hours)
    if state and state.last_status in ("failed", "held", "rejected") and state.last_attempt_at:
        due = max(due, state.last_attempt_at + timedelta(seconds=settings.failure_pause_seconds))
    return due


def last_runs(session: Session, keys: Collection[str] | None = None) -> dict[str, SyncRun]:
    """Each dataset's (or each of ``keys``') newest finished, non-skipped run."""
    latest = latest_finished_runs()
    query = select(SyncRun).join(latest, SyncRun.id == latest.c.id)
    if keys is not None:
        query = query.where(latest.c.dataset_key.in_(keys))
    return {run.dataset_key: run for run in session.scalars(query)}


def health_by_key(
    sessions: sessionmaker[Session], catalogue: Catalogue, settings: Settings, now: datetime, keys: list[str]
) -> dict[str, DatasetHealth]:
    """The health of ``keys`` (catalogue entries or stored rows), read in one session."""
    entries = catalogue.by_key()
    with reading(sessions)() as session:
        states = {s.dataset_key: s for s in session.scalars(select(SyncState))}
        runs = last_runs(session)
    return {key: assess(key, entries.get(key), states.get(key), runs.get(key), now, settings) for key in keys}


@dataclass(frozen=True)
class Component:
    name: str
    status: str  # ok | down
    detail: str
    critical: bool

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "critical": self.critical}


@dataclass(frozen=True)
class SystemHealth:
    components: tuple[Component, ...]
    workers: tuple[str, ...] = ()
    queue_length: int | None = None
    oldest_queued_seconds: float | None = None
    heartbeat_age_seconds: float | None = None
    checked_at: datetime | None = None

    @property
    def status(self) -> str:
        """``down`` when a critical part is, ``degraded`` when another one is, else ``ok``."""
        if any(c.status != "ok" and c.critical for c in self.components):
            return "down"
        return "degraded" if any(c.status != "ok" for c in self.components) else "ok"

    @property
    def down(self) -> list[Component]:
        return [c for c in self.components if c.status != "ok"]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "down": [c.name for c in self.down],
            "checked_at": iso(self.checked_at),
            **{c.name: c.to_json() for c in self.components},
            "online_workers": list(self.workers),
            "queue_length": self.queue_length,
            "oldest_queued_seconds": self.oldest_queued_seconds,
            "heartbeat_age_seconds": self.heartbeat_age_seconds,
        }


@dataclass
class _Probe:
    """Collects components as they are checked, each failure as one line."""

    components: list[Component] = field(default_factory=list)

    def add(self, name: str, critical: bool, check: Callable[[], str]) -> bool:
        try:
            self.components.append(Component(name, "ok", check(), critical))
            return True
        except _Down as down:
            self.components.append(Component(name, "down", str(down), critical))
        except Exception as exc:  # any failure to reach a part of the system is that part being down
            self.components.append(Component(name, "down", one_line(exc), critical))
        return False


class _Down(Exception):
    """A part answered, but not well enough."""


def system_health(settings: Settings, broker_url: str | None, now: datetime) -> SystemHealth:
    """Store, broker, scheduler and workers, each probed with a bounded timeout."""
    probe = _Probe()
    sessions_ok = probe.add("store", True, lambda: _check_store(settings.database_url))
    queue: list[Any] = []
    workers: list[str] = []
    if broker_url is None:
        probe.components.append(Component("broker", "down", "no broker configured (DATASYNC_BROKER_URL)", True))
        probe.components.append(Component("workers", "down", "unknown: no broker", False))
    elif probe.add("broker", True, lambda: _check_broker(broker_url, now, queue)):
        probe.add("workers", False, lambda: _check_workers(broker_url, settings, workers))
    else:
        probe.components.append(Component("workers", "down", "unknown: the broker does not answer", False))
    heartbeat: list[float] = []
    if sessions_ok:
        probe.add("scheduler", False, lambda: _check_scheduler(settings.database_url, now, heartbeat))
    else:
        probe.components.append(Component("scheduler", "down", "unknown: the store does not answer", False))
    return SystemHealth(
        tuple(probe.components),
        workers=tuple(workers),
        queue_length=queue[0] if queue else None,
        oldest_queued_seconds=queue[1] if queue else None,
        heartbeat_age_seconds=heartbeat[0] if heartbeat else None,
        checked_at=now,
    )


def _check_store(url: str) -> str:
    from models.db import get_engine

    with get_engine(url).connect() as connection:
        connection.execute(text("SELECT 1"))
    if not is_current(url):
        raise _Down("reachable, but not at the newest schema: run `datasync migrate`")
    return "reachable, at the newest schema"


def read_heartbeat(sessions: sessionmaker[Session]) -> SchedulerHeartbeat | None:
    with reading(sessions)() as session:
        return session.scalars(select(SchedulerHeartbeat).order_by(SchedulerHeartbeat.beat_at.desc())).first()


def _check_scheduler(url: str, now: datetime, age_out: list[float]) -> str:
    from models.db import session_factory

    beat = read_heartbeat(session_factory(url))
    if beat is None:
        raise _Down("no heartbeat recorded: beat has never run against this store")
    age = (now - beat.beat_at).total_seconds()
    age_out.append(age)
    limit = HEARTBEAT_MISSES * beat.interval_seconds
    if age > limit:
        raise _Down(f"last heartbeat {format_age(timedelta(seconds=age))} ago from {beat.host} (limit {limit:g} s)")
    return f"last heartbeat {format_age(timedelta(seconds=age))} ago from {beat.host}"


def _check_broker(url: str, now: datetime, out: list[Any]) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
        length = int(client.llen(QUEUE))
        oldest = client.lindex(QUEUE, -1)  # kombu pushes on the left and consumers pop from the right
    finally:
        client.close()
    out.extend([length, _queued_age(oldest, now)])
    return f"reachable; {length} task(s) queued"


def _queued_age(message: bytes | str | None, now: datetime) -> float | None:
    """Age of a queued message from the send stamp our publish hook adds to every task."""
    if not message:
        return None
    try:
        stamp = json.loads(message)["headers"][SENT_AT_HEADER]
        return max(0.0, (now - datetime.fromisoformat(stamp)).total_seconds())
    except (ValueError, KeyError, TypeError):
        return None


def _check_workers(url: str, settings: Settings, out: list[str]) -> str:
    from worker.broker import celery_client

    replies = celery_client(settings, url).control.ping(timeout=settings.worker_ping_timeout)
    out.extend(sorted(name for reply in replies for name in reply))
    if not out:
        raise _Down(f"no worker answered a ping within {settings.worker_ping_timeout:g} s")
    return f"{len(out)} online"


def one_line(exc: BaseException) -> str:
    """An exception as one readable line (no traceback), for operators."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def format_age(age: timedelta) -> str:
    seconds = int(max(age.total_seconds(), 0))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 72 else f"{hours // 24} d {hours % 24} h"


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def host_name() -> str:
    return socket.gethostname()

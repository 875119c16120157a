"""Webhooks on health transitions: a dataset becomes failing, stale or held, recovers, or its list
changed. Off unless ``DATASYNC_WEBHOOK_URLS`` is set.

Each event is JSON signed with HMAC-SHA256 over ``"<timestamp>.<body>"`` (headers
``X-Datasync-Timestamp`` and ``X-Datasync-Signature: sha256=<hex>``), and retried with exponential
backoff. Nothing here may block or fail a sync: transitions are read after the sync committed, and
delivery happens in a Celery task (with a broker) or a background thread (without one).
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.dialect_insert import conflict_insert
from models.diff import OptionsDiff
from models.schema import SyncState
from models.types import utcnow
from models.upsert import load_dataset
from worker.catalogue import Catalogue, CatalogueEntry
from worker.context import SyncContext
from worker.outcome import SyncOutcome
from worker.settings import Settings, split_list

if TYPE_CHECKING:
    from worker.health import DatasetHealth

log = logging.getLogger(__name__)
ALERTING = ("failing", "stale", "held")
MAX_BACKOFF_SECONDS = 3600.0
_pending: list[threading.Thread] = []
_pending_lock = threading.Lock()


class DeliveryError(Exception):
    """The receiver did not take the event; worth another try later."""


@dataclass(frozen=True)
class Event:
    type: str  # failing | stale | held | recovered | list_changed
    dataset: str
    state: str
    previous_state: str | None
    reason: str
    at: datetime
    last_error: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict[str, Any]:
        from worker.health import iso

        return {
            "id": self.id,
            "type": self.type,
            "dataset": self.dataset,
            "state": self.state,
            "previous_state": self.previous_state,
            "reason": self.reason,
            "at": iso(self.at),
            "last_error": self.last_error,
            "changes": self.changes,
        }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def send(url: str, event: dict[str, Any], settings: Settings) -> None:
    """One delivery attempt, signed at send time so the timestamp is fresh on every retry."""
    body = json.dumps(event, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": settings.user_agent,
        "X-Datasync-Event": str(event["type"]),
        "X-Datasync-Timestamp": timestamp,
        "X-Datasync-Signature": signature(settings.webhook_secret.get_secret_value(), timestamp, body),
    }
    try:
        response = requests.post(url, data=body, headers=headers, timeout=settings.webhook_timeout_seconds)
    except requests.RequestException as exc:
        raise DeliveryError(f"{url}: {type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"{url}: HTTP {response.status_code}")


def backoff(attempt: int, settings: Settings) -> float:
    return float(min(settings.webhook_backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))


def gave_up(event: dict[str, Any], attempts: int, exc: DeliveryError) -> bool:
    log.warning("webhook %s for %s not delivered after %d attempts: %s", event["type"], event["dataset"], attempts, exc)
    return False


def deliver_with_retries(url: str, event: dict[str, Any], settings: Settings) -> bool:
    """Try until delivered or out of attempts (the thread used when there is no broker)."""
    for attempt in range(1, settings.webhook_max_attempts + 1):
        try:
            send(url, event, settings)
            return True
        except DeliveryError as exc:
            if attempt == settings.webhook_max_attempts:
                return gave_up(event, attempt, exc)
            time.sleep(backoff(attempt, settings))
        except Exception:  # a bug here must not kill the thread silently
            log.exception("webhook %s for %s could not be sent", event["type"], event["dataset"])
            return False
    return False


def dispatch(events: list[Event], settings: Settings) -> None:
    """Hand each event to a Celery task (with a broker) or a thread; never waits for delivery."""
    for url in split_list(settings.webhook_urls):
        for event in events:
            payload = event.to_json()
            if settings.broker_url:
                from worker.webhook_task import deliver_webhook_task

                deliver_webhook_task.apply_async(kwargs={"url": url, "event": payload})
            else:
                _in_background(url, payload, settings)


def _in_background(url: str, payload: dict[str, Any], settings: Settings) -> None:
    """A daemon thread, so a receiver that is down never keeps a finished command alive for long:
    at exit, deliveries still pending get a short grace (two request timeouts), then are dropped."""
    thread = threading.Thread(target=deliver_with_retries, args=(url, payload, settings), name="webhook", daemon=True)
    with _pending_lock:
        if not _pending:
            atexit.register(_drain, 2 * settings.webhook_timeout_seconds)
        _pending[:] = [t for t in _pending if t.is_alive()] + [thread]
    thread.start()


def _drain(grace_seconds: float) -> None:
    deadline = time.monotonic() + grace_seconds
    for thread in list(_pending):
        thread.join(max(0.0, deadline - time.monotonic()))


def after_sync(ctx: SyncContext, entry: CatalogueEntry, outcome: SyncOutcome) -> None:
    """The pipeline's hook, called after a sync committed: announce what changed."""
    if not ctx.settings.webhook_urls:
        return
    try:
        now = utcnow()
        events = transitions(ctx.sessions, Catalogue(ctx.settings.catalogue, (entry,)), ctx.settings, now, [entry.key])
        if outcome.status in ("created", "updated") and not outcome.diff.is_empty:
            events.append(_list_changed(outcome, now))
        dispatch(events, ctx.settings)
    except Exception:  # a notification problem must never turn into a failed sync
        log.exception("webhook notification after syncing %s failed", entry.key)


def scan(sessions: sessionmaker[Session], catalogue: Catalogue, settings: Settings, now: datetime) -> None:
    """Beat's periodic look: transitions time alone causes (a list going stale)."""
    if not settings.webhook_urls:
        return
    try:
        dispatch(transitions(sessions, catalogue, settings, now, [e.key for e in catalogue.entries]), settings)
    except Exception:
        log.exception("webhook scan failed")


def transitions(
    sessions: sessionmaker[Session], catalogue: Catalogue, settings: Settings, now: datetime, keys: list[str]
) -> list[Event]:
    """Events for datasets whose state moved since last announced; the new states are remembered
    under row locks, so two workers never announce the same transition twice.

    The health model and the announced states load here, with the first webhook: a sync with none
    configured never imports them (issue 11: the sync path's memory)."""
    from models.monitoring import NotifiedState
    from worker.health import health_by_key

    health = health_by_key(sessions, catalogue, settings, now, keys)
    events = []
    with sessions.begin() as session:
        insert = conflict_insert(session.get_bind().dialect.name)
        session.execute(
            insert(NotifiedState)
            .values([{"dataset_key": key, "state": "", "changed_at": now} for key in sorted(keys)])
            .on_conflict_do_nothing(index_elements=["dataset_key"])
        )
        locked = select(NotifiedState).where(NotifiedState.dataset_key.in_(keys)).order_by(NotifiedState.dataset_key)
        rows = session.scalars(locked.with_for_update())  # one lock order for every caller: no deadlocks
        for row in rows:
            current = health[row.dataset_key]
            previous = row.state or None
            if current.state == previous:
                continue
            row.state, row.changed_at = current.state, now
            event = _transition_event(session, current, previous, now)
            if event:
                events.append(event)
    return events


def _transition_event(session: Session, health: DatasetHealth, previous: str | None, now: datetime) -> Event | None:
    if health.state in ALERTING:
        kind = health.state
    elif health.state == "ok" and previous in ALERTING:
        kind = "recovered"
    else:
        return None
    error = {"kind": health.last_error_kind, "message": health.last_error} if health.last_error_kind else None
    changes = _held_changes(session, health.key) if kind == "held" else None
    return Event(kind, health.key, health.state, previous, health.reason, now, error, changes)


def _held_changes(session: Session, key: str) -> dict[str, Any] | None:
    """What the held change would do, removed codes included, so a mass removal is seen."""
    state = session.get(SyncState, key)
    dataset = load_dataset(session, key)
    if state is None or dataset is None or state.held_options is None:
        return None
    return _changes(dataset.diff_to(state.held_options), dataset.version)


def _list_changed(outcome: SyncOutcome, now: datetime) -> Event:
    reason = f"{outcome.status} as version {outcome.version}"
    return Event("list_changed", outcome.key, "ok", None, reason, now, changes=_changes(outcome.diff, outcome.version))


def _changes(diff: OptionsDiff, version: int | None) -> dict[str, Any]:
    return {**diff.counts(), "removed_codes": list(diff.removed), "version": version}

"""Talking to the broker from processes that are not workers (CLI, HTTP API): find it, and a
Celery client pointed at it with the workers' own configuration, built from explicit settings."""

from __future__ import annotations

from typing import Any

from celery import Celery

from worker import heartbeat  # noqa: F401 - connects the publish hook that stamps every task's send time
from worker.embedded import running_broker_url
from worker.settings import Settings

_clients: dict[tuple[str, str], Celery] = {}


def broker_url_of(settings: Settings) -> str | None:
    """The configured broker, or the embedded one a ``datasync run`` in this directory started."""
    return settings.broker_url or running_broker_url()


def celery_client(settings: Settings, url: str) -> Celery:
    """A Celery app that sends to ``url`` exactly as the workers' app would (queue, serializer)."""
    backend = settings.result_backend or url
    key = (url, backend)
    if key not in _clients:
        client = Celery("datasync", set_as_current=False)
        client.config_from_object("celeryconfig")
        client.conf.update(broker_url=url, result_backend=backend, redbeat_redis_url=url)
        _clients[key] = client
    return _clients[key]


def enqueue_sync(settings: Settings, url: str, key: str, force: bool, trigger: str, requested_at: str) -> str:
    """Queue one ``datasync.sync_dataset`` by name; returns the task id."""
    kwargs: dict[str, Any] = {"key": key, "force": force, "trigger": trigger, "requested_at": requested_at}
    return str(celery_client(settings, url).send_task("datasync.sync_dataset", kwargs=kwargs).id)

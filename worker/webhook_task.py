"""The Celery task that delivers one webhook event, retried with exponential backoff."""

from __future__ import annotations

from typing import Any

from celery import Task

from worker.celery_app import app
from worker.settings import get_settings
from worker.webhooks import DeliveryError, backoff, gave_up, send


@app.task(bind=True, name="datasync.deliver_webhook", max_retries=None, acks_late=True)
def deliver_webhook_task(self: Task, url: str, event: dict[str, Any], attempt: int = 1) -> bool:
    settings = get_settings()
    try:
        send(url, event, settings)
    except DeliveryError as exc:
        if attempt >= settings.webhook_max_attempts:
            return gave_up(event, attempt, exc)
        raise self.retry(
            kwargs={"url": url, "event": event, "attempt": attempt + 1}, countdown=backoff(attempt, settings)
        ) from exc
    return True

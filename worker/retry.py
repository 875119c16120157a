"""How long to wait before retrying a transient failure, under Celery and in-process alike."""

from __future__ import annotations

import random

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.schema import SyncRun
from worker.settings import Settings


def retry_delay(attempt: int, retry_after: float | None, settings: Settings) -> float:
    """The worker's countdown: backoff capped at DATASYNC_RETRY_BACKOFF_MAX_SECONDS.

    The cap keeps every countdown well inside the broker's visibility timeout, so a waiting retry
    is never delivered twice.
    """
    return backoff(attempt, retry_after, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds)


def in_process_delay(attempt: int, retry_after: float | None, settings: Settings) -> float | None:
    """The same rule for ``datasync sync``, capped at DATASYNC_SYNC_RETRY_MAX_SECONDS.

    None when the upstream asks for a longer wait than that: retrying sooner than its
    Retry-After would be impolite, so the failure is reported instead.
    """
    ceiling = settings.sync_retry_max_seconds
    if retry_after is not None and retry_after > ceiling:
        return None
    return backoff(attempt, retry_after, settings.retry_backoff_seconds, ceiling)


def backoff(attempt: int, retry_after: float | None, base: float, ceiling: float) -> float:
    """Exponential backoff with jitter, never sooner than the upstream's Retry-After.

    Equal jitter (half fixed, half random) spreads retries from many workers without ever
    retrying almost at once.
    """
    delay = min(ceiling, base * 2 ** max(0, attempt - 1))
    delay = delay / 2 + random.uniform(0, delay / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return float(min(delay, ceiling))


def end_retry_chain(sessions: sessionmaker[Session], key: str) -> None:
    """Clear ``will_retry`` on the dataset's newest finished attempt: no retry of it is queued."""
    with sessions.begin() as session:
        finished = SyncRun.status.not_in(("running", "skipped"))
        newest = session.scalar(select(func.max(SyncRun.id)).where(SyncRun.dataset_key == key, finished))
        if newest is not None:
            session.execute(update(SyncRun).where(SyncRun.id == newest).values(will_retry=False))

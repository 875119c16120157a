"""How long to wait before retrying a transient failure."""

from __future__ import annotations

import random

from worker.settings import Settings


def retry_delay(attempt: int, retry_after: float | None, settings: Settings) -> float:
    """Exponential backoff with jitter, never sooner than the upstream's Retry-After.

    Equal jitter (half fixed, half random) spreads retries from many workers without ever
    retrying almost at once. The cap keeps every countdown well inside the broker's visibility
    timeout, so a waiting retry is never delivered twice.
    """
    ceiling = settings.retry_backoff_max_seconds
    delay = min(ceiling, settings.retry_backoff_seconds * 2 ** max(0, attempt - 1))
    delay = delay / 2 + random.uniform(0, delay / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return float(min(delay, ceiling))

"""Retry delays: exponential, jittered, never before Retry-After, always inside the cap."""

import pytest

from worker.retry import retry_delay
from worker.settings import Settings

SETTINGS = Settings(retry_backoff_seconds=10, retry_backoff_max_seconds=300)


@pytest.mark.parametrize("attempt, low, high", [(1, 5, 10), (2, 10, 20), (3, 20, 40), (6, 150, 300), (12, 150, 300)])
def test_backoff_doubles_with_equal_jitter_up_to_the_cap(attempt: int, low: float, high: float) -> None:
    delays = {retry_delay(attempt, None, SETTINGS) for _ in range(200)}
    assert all(low <= delay <= high for delay in delays)
    assert len(delays) > 100  # jittered, not a fixed delay


def test_retry_after_is_honoured_when_longer() -> None:
    assert all(retry_delay(1, 120, SETTINGS) == 120 for _ in range(50))


def test_retry_after_never_pushes_past_the_cap() -> None:
    assert retry_delay(1, 86_400, SETTINGS) == 300

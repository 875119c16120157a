"""Which datasets have a sync message queued that no worker has started yet.

A mark is a Redis key per dataset (the broker is always Redis), set whenever a message for it is
queued (beat's scan, a retry waiting out its backoff, a task sent back to wait for its host or
lease) and deleted when a worker starts the task. While it lives, beat's scan queues nothing more
for the dataset: one message is enough, however long the backlog.

Its TTL tracks the message's ETA: countdown + one scan interval (at least ``LATE_MIN_SECONDS``).
A worker holds countdown messages in memory, unacknowledged, until they are due; a worker killed
with them in hand gives them back only after the broker's visibility timeout (an hour). Once a
mark has outlived its message's ETA by a scan interval and the task has not started, the message
is presumed lost and the next scan queues the dataset again (a due dataset, or a retry still
promised by its newest run): recovery within two scan intervals of the ETA. No live holder has to
keep the mark alive, so a dead holder cannot either. The price: a message still waiting past its
ETA by more than that (every pool process busy) gets a duplicate, which its start turns into a
skipped run (``busy``, ``done``, ``not_due``, ``superseded``), never a second sync.
"""

from __future__ import annotations

import contextlib
import math
import os

import redis

from worker.settings import get_settings

LATE_MIN_SECONDS = 10.0
_clients: dict[tuple[int, str], redis.Redis] = {}


def mark(countdowns: dict[str, float]) -> list[str]:
    """Mark each key as queued with that countdown; return those that had no live mark (all without Redis)."""
    keys = list(countdowns)
    client = redis_client()
    if client is None or not keys:
        return keys
    try:
        pipe = client.pipeline(transaction=False)
        for key, countdown in countdowns.items():
            pipe.set(_name(key), "1", nx=True, px=ttl_ms(countdown))
        return [key for key, fresh in zip(keys, pipe.execute(), strict=True) if fresh]
    except redis.RedisError:
        return keys  # a duplicate message costs a skipped run; a missing one costs a sync


def hold(key: str, countdown: float) -> None:
    """Mark ``key`` for a message just queued with ``countdown`` (replacing any older mark)."""
    client = redis_client()
    if client is not None:
        with contextlib.suppress(redis.RedisError):
            client.set(_name(key), "1", px=ttl_ms(countdown))


def clear(key: str) -> None:
    client = redis_client()
    if client is not None:
        with contextlib.suppress(redis.RedisError):
            client.delete(_name(key))


def available() -> bool:
    """Whether marks are kept at all (the broker is a Redis): without them a lost message cannot be told."""
    return redis_client() is not None


def ttl_ms(countdown: float) -> int:
    """The mark's lifetime: the message's countdown, then one scan interval for a late start."""
    late = max(LATE_MIN_SECONDS, get_settings().beat_interval_seconds)
    return max(1, math.ceil((max(0.0, countdown) + late) * 1000))


def _name(key: str) -> str:
    return f"datasync:pending:{key}"


def redis_client() -> redis.Redis | None:
    """This process's client of the broker's Redis (None when the broker is not a Redis)."""
    url = get_settings().broker_url
    if not url or not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    slot = (os.getpid(), url)
    if slot not in _clients:
        _clients[slot] = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    return _clients[slot]

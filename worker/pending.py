"""Which datasets beat's scan has queued that no worker has started yet.

The scan runs every ``DATASYNC_BEAT_INTERVAL_SECONDS``; without these marks a backlog longer than
one interval would be queued again on every scan. A mark is a Redis key (the broker is always
Redis) set when the scan queues a dataset and deleted when a worker starts it. Its TTL, ten scan
intervals (5 min with the shipped 30 s), bounds how long a message lost with a killed worker
before it started (one waiting for its countdown) keeps the dataset from being queued again.
"""

from __future__ import annotations

import contextlib
import os

import redis

from worker.settings import get_settings

PENDING_TTL_SCANS = 10
_clients: dict[tuple[int, str], redis.Redis] = {}


def mark(keys: list[str]) -> list[str]:
    """Mark ``keys`` as queued; return those that were not already (all of them without Redis)."""
    client = _client()
    if client is None or not keys:
        return keys
    ttl = max(10, round(PENDING_TTL_SCANS * get_settings().beat_interval_seconds))
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.set(_name(key), "1", nx=True, ex=ttl)
        return [key for key, fresh in zip(keys, pipe.execute(), strict=True) if fresh]
    except redis.RedisError:
        return keys  # a duplicate message costs a skipped run; a missing one costs a sync


def clear(key: str) -> None:
    client = _client()
    if client is not None:
        with contextlib.suppress(redis.RedisError):
            client.delete(_name(key))


def _name(key: str) -> str:
    return f"datasync:pending:{key}"


def _client() -> redis.Redis | None:
    url = get_settings().broker_url
    if not url or not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    slot = (os.getpid(), url)
    if slot not in _clients:
        _clients[slot] = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    return _clients[slot]

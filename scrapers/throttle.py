"""Politeness per upstream host: at most N requests in flight and R request starts per second.

``LocalThrottle`` shares the budget between the threads of one process (``datasync sync``);
``RedisThrottle`` shares it between every worker on every machine, which is what a public NHS
website needs once several workers run.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from scrapers.errors import TransientError


@dataclass(frozen=True)
class HostLimit:
    concurrency: int
    per_second: float


class HostLimits:
    """Default limit plus per-host overrides from ``host=concurrency:rate`` pairs."""

    def __init__(self, default: HostLimit, spec: str = "") -> None:
        self.default = default
        self.overrides: dict[str, HostLimit] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            host, _, limits = item.partition("=")
            concurrency, _, rate = limits.partition(":")
            try:
                limit = HostLimit(int(concurrency), float(rate))
            except ValueError as exc:
                raise ValueError(f"DATASYNC_HOST_LIMITS: {item!r} is not of the form host=concurrency:rate") from exc
            if not host.strip() or limit.concurrency < 1 or limit.per_second <= 0:
                raise ValueError(f"DATASYNC_HOST_LIMITS: {item!r} needs a host, concurrency >= 1 and rate > 0")
            self.overrides[host.strip().lower()] = limit

    def for_host(self, host: str) -> HostLimit:
        return self.overrides.get(host, self.default)


class LocalThrottle:
    def __init__(self, limits: HostLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}
        self._next_start: dict[str, float] = {}

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        limit = self.limits.for_host(host)
        with self._lock:
            semaphore = self._semaphores.setdefault(host, threading.BoundedSemaphore(limit.concurrency))
        with semaphore:
            time.sleep(self._reserve_start(host, limit))
            yield

    def _reserve_start(self, host: str, limit: HostLimit) -> float:
        """Book the next free start time for ``host``; return how long to wait for it."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start.get(host, now))
            self._next_start[host] = start + 1.0 / limit.per_second
            return start - now


# Atomically: drop expired holders, take a concurrency slot if one is free, and book the next
# start time for the host. Redis's own clock is used so workers on different machines agree.
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return '-1'
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
local start = math.max(now, tonumber(redis.call('GET', KEYS[2]) or now))
redis.call('SET', KEYS[2], tostring(start + tonumber(ARGV[4])), 'EX', 3600)
return tostring(start - now)
"""


class RedisThrottle:
    """The same budget as ``LocalThrottle``, shared by every worker through Redis."""

    def __init__(self, url: str, limits: HostLimits, *, wait_limit: float = 120.0, slot_ttl: float = 300.0) -> None:
        self.limits = limits
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        self.reserve = self.client.register_script(_RESERVE)
        self.wait_limit = wait_limit
        self.slot_ttl = slot_ttl

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        limit = self.limits.for_host(host)
        token = uuid.uuid4().hex
        keys = [f"datasync:throttle:{host}:slots", f"datasync:throttle:{host}:next"]
        deadline = time.monotonic() + self.wait_limit
        try:
            while (wait := self._reserve(keys, token, limit)) < 0:
                if time.monotonic() > deadline:
                    raise TransientError("throttled", f"{host}: no request slot free within {self.wait_limit:.0f} s")
                time.sleep(0.05)
        except redis.RedisError as exc:
            message = f"{host}: the Redis politeness budget is unreachable: {exc}"
            raise TransientError("throttle_unavailable", message) from exc
        try:
            time.sleep(wait)
            yield
        finally:
            with contextlib.suppress(redis.RedisError):  # the slot expires by itself after slot_ttl
                self.client.zrem(keys[0], token)

    def _reserve(self, keys: list[str], token: str, limit: HostLimit) -> float:
        return float(self.reserve(keys, [token, limit.concurrency, self.slot_ttl, 1.0 / limit.per_second]))

    def reachable(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

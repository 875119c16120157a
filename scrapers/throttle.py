"""Politeness per upstream host: at most N requests in flight and R request starts per second.

``LocalThrottle`` shares the budget between the threads of one process (``datasync sync``);
``RedisThrottle`` shares it between every worker on every machine, which is what a public NHS
website needs once several workers run.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

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


# Starts are spaced by this share more than 1/rate, and each start is counted from the moment the
# previous one really began: a request delayed on its way (a busy machine, a new connection) then
# never lets the upstream see more than ``rate`` requests in any one-second window.
DEFAULT_RATE_MARGIN = 0.1


def spacing(limit: HostLimit, margin: float) -> float:
    return (1 + margin) / limit.per_second


class LocalThrottle:
    def __init__(self, limits: HostLimits, *, margin: float = DEFAULT_RATE_MARGIN) -> None:
        self.limits = limits
        self.margin = margin
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}
        self._in_flight: dict[str, int] = {}
        self._last_start: dict[str, float] = {}

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        limit = self.limits.for_host(host)
        with self._lock:
            semaphore = self._semaphores.setdefault(host, threading.BoundedSemaphore(limit.concurrency))
        with semaphore:
            self._count(host, +1)
            try:
                while (wait := self._try_start(host, limit)) > 0:
                    time.sleep(wait)
                yield
            finally:
                self._count(host, -1)

    def wait_estimate(self, host: str) -> float:
        """Seconds until a request to ``host`` could start (0: now, inf: every slot is taken); nothing is booked."""
        limit = self.limits.for_host(host)
        with self._lock:
            if self._in_flight.get(host, 0) >= limit.concurrency:
                return math.inf
            return max(0.0, self._last_start.get(host, -math.inf) + spacing(limit, self.margin) - time.monotonic())

    def _count(self, host: str, delta: int) -> None:
        with self._lock:
            self._in_flight[host] = self._in_flight.get(host, 0) + delta

    def _try_start(self, host: str, limit: HostLimit) -> float:
        """Start now if the spacing since the last real start allows it (0), else how long to wait."""
        with self._lock:
            now = time.monotonic()
            ready = self._last_start.get(host, -math.inf) + spacing(limit, self.margin)
            if now < ready:
                return ready - now
            self._last_start[host] = now
            return 0.0


# Atomically: drop holders whose TTL ran out, then take a concurrency slot if one is free.
# Redis's own clock is used so workers on different machines agree.
_TAKE_SLOT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
return 1
"""
# Start now if the spacing since the host's last real start allows it ('0'), else the wait.
_TRY_START = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local ready = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])
if now < ready then
  return tostring(ready - now)
end
redis.call('SET', KEYS[1], tostring(now), 'EX', 3600)
return '0'
"""
# Push out the expiry of slots this process still holds (XX: never revive a slot already dropped).
_RENEW = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
for i, token in ipairs(ARGV) do
  if i > 1 and redis.call('ZADD', KEYS[i - 1], 'XX', 'CH', now + tonumber(ARGV[1]), token) == 1 then
    redis.call('EXPIRE', KEYS[i - 1], math.ceil(tonumber(ARGV[1])) + 60)
  end
end
return 1
"""
# What a new request would face: a full host (-1) or the wait before its start.
_ESTIMATE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
if redis.call('ZCOUNT', KEYS[1], now, '+inf') >= tonumber(ARGV[1]) then
  return '-1'
end
local ready = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(ARGV[2])
return tostring(math.max(0, ready - now))
"""


class RedisThrottle:
    """The same budget as ``LocalThrottle``, shared by every worker through Redis.

    A held slot has a short TTL that a thread of the holding process renews, so a slot held by a
    killed process is free again within ``slot_ttl`` seconds, while a slow live request keeps it.
    """

    def __init__(
        self,
        url: str,
        limits: HostLimits,
        *,
        wait_limit: float = 120.0,
        slot_ttl: float = 15.0,
        margin: float = DEFAULT_RATE_MARGIN,
    ) -> None:
        self.limits = limits
        self.margin = margin
        import redis  # here, not at the top: `datasync sync` throttles in-process and never loads the client

        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        self.unreachable: type[Exception] = redis.RedisError
        self.take_slot = self.client.register_script(_TAKE_SLOT)
        self.try_start = self.client.register_script(_TRY_START)
        self.renew = self.client.register_script(_RENEW)
        self.estimate = self.client.register_script(_ESTIMATE)
        self.wait_limit = wait_limit
        self.slot_ttl = slot_ttl
        self._held: dict[str, str] = {}  # token -> slots key
        self._held_lock = threading.Lock()
        self._renewer: tuple[int, threading.Thread] | None = None

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        limit = self.limits.for_host(host)
        token = uuid.uuid4().hex
        slots, last_start = f"datasync:throttle:{host}:slots", f"datasync:throttle:{host}:last_start"
        deadline = time.monotonic() + self.wait_limit
        try:
            while not int(self.take_slot([slots], [token, limit.concurrency, self.slot_ttl])):
                self._check_deadline(host, deadline)
                time.sleep(0.05)
            self._hold(token, slots)
            while (wait := float(self.try_start([last_start], [spacing(limit, self.margin)]))) > 0:
                self._check_deadline(host, deadline)
                time.sleep(wait)
        except self.unreachable as exc:
            self._let_go(token)
            message = f"{host}: the Redis politeness budget is unreachable: {exc}"
            raise TransientError("throttle_unavailable", message) from exc
        except TransientError:
            self._let_go(token)
            raise
        try:
            yield
        finally:
            self._let_go(token)

    def wait_estimate(self, host: str) -> float:
        """Seconds until a request to ``host`` could start (0: now, inf: every slot is taken); nothing is booked."""
        limit = self.limits.for_host(host)
        keys = [f"datasync:throttle:{host}:slots", f"datasync:throttle:{host}:last_start"]
        try:
            wait = float(self.estimate(keys, [limit.concurrency, spacing(limit, self.margin)]))
        except self.unreachable:
            return 0.0  # let the request itself report the outage
        return math.inf if wait < 0 else wait

    def reachable(self) -> bool:
        try:
            return bool(self.client.ping())
        except self.unreachable:
            return False

    def _check_deadline(self, host: str, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise TransientError("throttled", f"{host}: no request slot free within {self.wait_limit:.0f} s")

    def _hold(self, token: str, slots: str) -> None:
        with self._held_lock:
            self._held[token] = slots
            if self._renewer is None or self._renewer[0] != os.getpid() or not self._renewer[1].is_alive():
                thread = threading.Thread(target=self._keep_renewing, name="throttle-renewer", daemon=True)
                self._renewer = (os.getpid(), thread)
                thread.start()

    def _let_go(self, token: str) -> None:
        with self._held_lock:
            slots = self._held.pop(token, None)
        if slots is not None:
            with contextlib.suppress(self.unreachable):  # the slot expires by itself after slot_ttl
                self.client.zrem(slots, token)

    def _keep_renewing(self) -> None:
        while True:
            time.sleep(self.slot_ttl / 3)
            with self._held_lock:
                held = list(self._held.items())
            if held:
                with contextlib.suppress(self.unreachable):
                    self.renew([slots for _, slots in held], [self.slot_ttl, *(token for token, _ in held)])

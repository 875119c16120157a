"""Politeness per upstream host: at most N requests in flight and R request starts per second.

``LocalThrottle`` shares the budget between the threads of one process (``datasync sync``);
``RedisThrottle`` shares it between every worker on every machine, which is what a public NHS
website needs once several workers run.

Two steps, because the rate counts where the upstream counts it, on the wire:

- ``slot(host)`` grants a concurrency slot, spaced from the previous grant. It is held until the
  response is read, and already keeps the starts apart on an idle machine.
- ``sending(host)`` wraps the very write of a request's headers (``scrapers/http.py``). It lets one
  request at a time on the wire per host, no sooner than the spacing after the previous write
  *ended*. A request that a busy machine ran late after its grant (a descheduled thread, a slow new
  connection) makes the next one wait again, rather than arriving right behind it.
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


# Starts are spaced by this share more than 1/rate. Writes are ordered and spaced at the send itself,
# so what the margin still absorbs is the delay after the write: the network path and how late the
# upstream's own log stamps an arrival (at 2/s: 55 ms of slack).
DEFAULT_RATE_MARGIN = 0.1


def spacing(limit: HostLimit, margin: float) -> float:
    return (1 + margin) / limit.per_second


class LocalThrottle:
    def __init__(self, limits: HostLimits, *, margin: float = DEFAULT_RATE_MARGIN) -> None:
        self.limits = limits
        self.margin = margin
        self._lock = threading.Lock()
        self._sent = threading.Condition(self._lock)
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}
        self._in_flight: dict[str, int] = {}
        self._last_start: dict[str, float] = {}
        self._writing: set[str] = set()
        self._last_sent: dict[str, float] = {}

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

    @contextlib.contextmanager
    def sending(self, host: str) -> Iterator[None]:
        """Around the write of a request: alone on the wire for ``host``, spaced from the last write's end."""
        interval = spacing(self.limits.for_host(host), self.margin)
        with self._sent:
            while (wait := self._send_wait(host, interval)) != 0:
                self._sent.wait(wait)
            self._writing.add(host)
        try:
            yield
        finally:
            with self._sent:
                self._writing.discard(host)
                self._last_sent[host] = time.monotonic()
                self._sent.notify_all()

    def wait_estimate(self, host: str) -> float:
        """Seconds until a request to ``host`` could start (0: now, inf: every slot is taken); nothing is booked."""
        limit = self.limits.for_host(host)
        with self._lock:
            if self._in_flight.get(host, 0) >= limit.concurrency:
                return math.inf
            return max(0.0, self._last_start.get(host, -math.inf) + spacing(limit, self.margin) - time.monotonic())

    def _send_wait(self, host: str, interval: float) -> float | None:
        """0: write now; None: another request to ``host`` is being written; else seconds to wait. Lock held."""
        if host in self._writing:
            return None
        return max(0.0, self._last_sent.get(host, -math.inf) + interval - time.monotonic())

    def _count(self, host: str, delta: int) -> None:
        with self._lock:
            self._in_flight[host] = self._in_flight.get(host, 0) + delta

    def _try_start(self, host: str, limit: HostLimit) -> float:
        """Grant now if the spacing since the last grant allows it (0), else how long to wait."""
        with self._lock:
            now = time.monotonic()
            ready = self._last_start.get(host, -math.inf) + spacing(limit, self.margin)
            if now < ready:
                return ready - now
            self._last_start[host] = now
            return 0.0


# Every script reads Redis's own clock, so workers on different machines agree.
_REDIS_NOW = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
"""
# Atomically: drop holders whose TTL ran out, then take a concurrency slot if one is free.
_TAKE_SLOT = (
    _REDIS_NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
return 1
"""
)
# Grant now if the spacing since the host's last grant allows it ('0'), else the wait.
_TRY_START = (
    _REDIS_NOW
    + """
local ready = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])
if now < ready then
  return tostring(ready - now)
end
redis.call('SET', KEYS[1], tostring(now), 'EX', 3600)
return '0'
"""
)
# Push out the expiry of slots this process still holds (XX: never revive a slot already dropped).
_RENEW = (
    _REDIS_NOW
    + """
for i, token in ipairs(ARGV) do
  if i > 1 and redis.call('ZADD', KEYS[i - 1], 'XX', 'CH', now + tonumber(ARGV[1]), token) == 1 then
    redis.call('EXPIRE', KEYS[i - 1], math.ceil(tonumber(ARGV[1])) + 60)
  end
end
return 1
"""
)
# Write now ('0'): nobody else is writing to the host and the spacing since the last write's end has
# passed; the writing mark expires by itself if its holder dies mid-write. Else the wait.
_BEGIN_SEND = (
    _REDIS_NOW
    + """
local ready = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(ARGV[2])
if now < ready then
  return string.format('%.6f', ready - now)
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
  return '0'
end
return ARGV[4]
"""
)
# The write has ended: the next one is spaced from now.
_END_SEND = (
    _REDIS_NOW
    + """
redis.call('SET', KEYS[2], string.format('%.6f', now), 'EX', 3600)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""
)
# What a new request would face: a full host (-1) or the wait before its start.
_ESTIMATE = (
    _REDIS_NOW
    + """
if redis.call('ZCOUNT', KEYS[1], now, '+inf') >= tonumber(ARGV[1]) then
  return '-1'
end
local ready = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(ARGV[2])
return tostring(math.max(0, ready - now))
"""
)


# Seconds between looks while another process writes to the host: a write takes about a millisecond.
SEND_POLL = 0.005


class RedisThrottle:
    """The same budget as ``LocalThrottle``, shared by every worker through Redis.

    A held slot has a short TTL that a thread of the holding process renews, so a slot held by a
    killed process is free again within ``slot_ttl`` seconds, while a slow live request keeps it.
    The mark of a request being written lasts one write; it expires after ``send_ttl`` seconds, so a
    process killed mid-write holds up the host's next writes at most that long.
    """

    def __init__(
        self,
        url: str,
        limits: HostLimits,
        *,
        wait_limit: float = 120.0,
        slot_ttl: float = 15.0,
        margin: float = DEFAULT_RATE_MARGIN,
        send_ttl: float = 5.0,
    ) -> None:
        self.limits = limits
        self.margin = margin
        import redis  # here, not at the top: `datasync sync` throttles in-process and never loads the client

        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        self.unreachable: type[Exception] = redis.RedisError
        self.take_slot = self.client.register_script(_TAKE_SLOT)
        self.try_start = self.client.register_script(_TRY_START)
        self.renew = self.client.register_script(_RENEW)
        self.begin_send = self.client.register_script(_BEGIN_SEND)
        self.end_send = self.client.register_script(_END_SEND)
        self.estimate = self.client.register_script(_ESTIMATE)
        self.wait_limit = wait_limit
        self.slot_ttl = slot_ttl
        self.send_ttl = send_ttl
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
            raise _unavailable(host, exc) from exc
        except TransientError:
            self._let_go(token)
            raise
        try:
            yield
        finally:
            self._let_go(token)

    @contextlib.contextmanager
    def sending(self, host: str) -> Iterator[None]:
        """Around the write of a request: alone on the wire for ``host``, spaced from the last write's end."""
        keys = [f"datasync:throttle:{host}:writing", f"datasync:throttle:{host}:last_sent"]
        token = uuid.uuid4().hex
        interval = spacing(self.limits.for_host(host), self.margin)
        marked: list[str | float] = [token, interval, math.ceil(self.send_ttl * 1000), SEND_POLL]
        deadline = time.monotonic() + self.wait_limit
        try:
            while (wait := float(self.begin_send(keys, marked))) > 0:
                self._check_deadline(host, deadline)
                time.sleep(wait)
        except self.unreachable as exc:
            raise _unavailable(host, exc) from exc
        try:
            yield
        finally:
            with contextlib.suppress(self.unreachable):  # the mark expires by itself after send_ttl
                self.end_send(keys, [token])

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


def _unavailable(host: str, exc: Exception) -> TransientError:
    return TransientError("throttle_unavailable", f"{host}: the Redis politeness budget is unreachable: {exc}")

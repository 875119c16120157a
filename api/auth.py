"""Who is calling, and whether they may: API keys (``Authorization: Bearer dsk_...``), roles and
rate limits per key or per IP, answered the way the platform answers (401, 403, 429)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from worker.apikeys import Caller, authenticate
from worker.health import Clock

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}
ANONYMOUS = Caller()


class RateLimiter:
    """A sliding one-minute window per identity, in this process."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._monotonic = monotonic

    def retry_after(self, identity: str, per_minute: int) -> int | None:
        """None if the request may go ahead (and counts it), else seconds to wait."""
        now = self._monotonic()
        with self._lock:
            hits = self._hits.setdefault(identity, deque())
            while hits and hits[0] <= now - 60:
                hits.popleft()
            if len(hits) >= per_minute:
                return max(1, math.ceil(hits[0] + 60 - now))
            hits.append(now)
            return None


class Gate:
    """Authenticates, then throttles, every request that declares it."""

    def __init__(
        self, sessions: sessionmaker[Session], clock: Clock, anonymous_per_minute: int, key_per_minute: int
    ) -> None:
        self.sessions, self.clock = sessions, clock
        self.anonymous_per_minute, self.key_per_minute = anonymous_per_minute, key_per_minute
        self.limiter = RateLimiter()

    def caller(self, request: Request) -> Caller:
        header = request.headers.get("authorization")
        caller: Caller | None = ANONYMOUS
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            caller = authenticate(self.sessions, token, self.clock()) if scheme.lower() == "bearer" and token else None
        if caller is not None and caller.authenticated:
            identity, limit = f"key:{caller.key_id}", self.key_per_minute
        else:
            identity, limit = f"ip:{request.client.host if request.client else '-'}", self.anonymous_per_minute
        wait = self.limiter.retry_after(identity, limit)
        if wait is not None:
            raise HTTPException(
                429, f"Request was throttled. Expected available in {wait} seconds.", {"Retry-After": str(wait)}
            )
        if caller is None:
            raise HTTPException(401, "Invalid, expired or revoked API key.", CHALLENGE)
        return caller


def require_key(caller: Caller) -> Caller:
    if not caller.authenticated:
        raise HTTPException(401, "Authentication credentials were not provided.", CHALLENGE)
    return caller


def require_operator(caller: Caller) -> Caller:
    require_key(caller)
    if caller.role != "operator":
        raise HTTPException(403, "You do not have permission to perform this action: it needs an operator key.")
    return caller

"""Everything a sync needs that outlives one dataset: settings, store, HTTP client, identity."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from models.db import session_factory
from scrapers.http import HostHealth, HttpClient, NoThrottle, Throttle, UrlRewrites
from scrapers.normalise import Limits
from scrapers.throttle import HostLimit, HostLimits, LocalThrottle, RedisThrottle
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.fetchers import Fetchers

log = logging.getLogger(__name__)


@dataclass
class SyncContext:
    settings: Settings
    sessions: sessionmaker[Session]
    http: HttpClient
    limits: Limits
    fetchers: Fetchers | None = None  # worker processes ``run_per_host`` lends a CPU-bound run
    process_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")

    @classmethod
    def from_settings(cls, settings: Settings, throttle: Throttle | None = None) -> SyncContext:
        http = HttpClient(
            user_agent=settings.user_agent,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_bytes=settings.max_response_bytes,
            rewrites=UrlRewrites(settings.url_rewrites),
            throttle=throttle or NoThrottle(),
            deadline=settings.request_deadline_seconds,
            host_health=HostHealth(settings.host_timeout_limit, settings.host_unreachable_seconds),
        )
        limits = Limits(settings.max_code_length, settings.max_label_length)
        return cls(settings, session_factory(settings.database_url, settings.dataset_table()), http, limits)

    @property
    def worker_id(self) -> str:
        """Lease owner: unique per thread, so threads of one process never share a lease."""
        return f"{self.process_id}:{threading.get_ident()}"

    def close(self) -> None:
        self.http.close()


def throttle_for(settings: Settings) -> LocalThrottle | RedisThrottle:
    """Share the politeness budget through Redis whenever it answers, else within this process."""
    limits = HostLimits(HostLimit(settings.host_concurrency, settings.host_rate_per_second), settings.host_limits)
    if settings.broker_url and settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        margin = settings.host_rate_margin
        shared = RedisThrottle(settings.broker_url, limits, wait_limit=settings.read_timeout * 4, margin=margin)
        if shared.reachable():
            return shared
        log.warning(
            "Redis at the broker URL does not answer: politeness limits apply to this process only "
            "(each process running at once adds its own full rate per host)"
        )
    return LocalThrottle(limits, margin=settings.host_rate_margin)

"""The beat scheduler: RedBeat, made to ride out a Redis outage instead of exiting.

RedBeat lets any Redis error escape its tick, which stops beat for good when Redis restarts. Here
a tick that cannot reach Redis is skipped and tried again shortly; a lock lost meanwhile (it
expired during the outage) is taken again if free, else this beat stands by like a second one.
Named in ``celeryconfig.beat_scheduler``.
"""

from __future__ import annotations

import logging
from typing import Any

from redbeat import RedBeatScheduler
from redis.exceptions import LockError, RedisError

log = logging.getLogger(__name__)


class ResilientRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return float(super().tick(*args, **kwargs))
        except LockError:
            return self._retake_lock()
        except RedisError as exc:
            log.warning("beat: Redis unreachable (%s); trying again in %s s", exc.__class__.__name__, self.max_interval)
            return float(self.max_interval)

    def _retake_lock(self) -> float:
        try:
            if self.lock is not None and self.lock.acquire(blocking=False):
                log.info("beat: lock taken again after losing it")
                return 0.0
        except RedisError:
            pass
        log.info("beat: the lock is held elsewhere (or Redis is away); standing by")
        return float(self.max_interval)

"""Beat's heartbeat in the store, and a send stamp on every task message.

Both hang on Celery's publish signal: beat publishes ``datasync.sync_due`` once per interval, so
stamping the heartbeat there proves beat itself is alive (not merely that workers ran a scan), and
the send stamp lets monitoring tell how long the oldest queued task has waited.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import before_task_publish
from sqlalchemy.orm import Session, sessionmaker

from models.db import session_factory
from models.monitoring import SchedulerHeartbeat
from models.types import utcnow
from worker.health import SENT_AT_HEADER, host_name
from worker.settings import get_settings

log = logging.getLogger(__name__)
SCAN_TASK = "datasync.sync_due"


def write_heartbeat(sessions: sessionmaker[Session], interval_seconds: float, name: str = "beat") -> None:
    with sessions.begin() as session:
        row = session.get(SchedulerHeartbeat, name)
        if row is None:
            row = SchedulerHeartbeat(name=name)
            session.add(row)
        row.beat_at, row.interval_seconds, row.host = utcnow(), interval_seconds, host_name()[:255]


@before_task_publish.connect
def _on_publish(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers[SENT_AT_HEADER] = utcnow().isoformat()
    if sender != SCAN_TASK:
        return
    settings = get_settings()
    try:
        write_heartbeat(session_factory(settings.database_url), settings.beat_interval_seconds)
    except Exception as exc:  # the schedule must go on even when the store is down; monitoring will say so
        log.warning("could not record the beat heartbeat: %s", exc)

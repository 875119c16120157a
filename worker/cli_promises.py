"""Retries promised by a ``datasync sync`` that is gone: its run says ``will_retry`` and nothing will.

The in-process retry waits inside the command (``worker.scheduling``), on no broker and under no
lease, so nothing outlives a killed ``datasync sync`` to keep its promise. A ``cli`` run's promise
is broken once its process is known dead (``sync_runs.worker`` names this host and a pid that is
not running) or once its retry is long overdue (DATASYNC_SYNC_RETRY_MAX_SECONDS, the longest wait,
plus ``OVERDUE_MARGIN_SECONDS`` for a free thread and host). Beat's scan clears broken promises in
the store (``close_broken``); every reader of a run (``status``, ``runs``, the HTTP API) reads them as
broken through ``run_log.run_json`` (``still_promised``) when no beat runs. The dataset is then what it
is after a failure: due again after the failure pause.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.schema import SyncRun
from worker.settings import Settings

OVERDUE_MARGIN_SECONDS = 300.0  # after its countdown, a retry still waits for a free thread and host slot


def broken(run: SyncRun, now: datetime, settings: Settings) -> bool:
    """Whether ``run`` promises an in-process retry that will never come."""
    if not run.will_retry or run.trigger != "cli" or run.finished_at is None:
        return False
    overdue = run.finished_at + timedelta(seconds=settings.sync_retry_max_seconds + OVERDUE_MARGIN_SECONDS)
    return now > overdue or holder_gone(run.worker)


def still_promised(run: SyncRun, now: datetime, settings: Settings) -> bool:
    """Whether ``run`` promises a retry that may still come: what operators are shown as ``will_retry``."""
    return bool(run.will_retry) and not broken(run, now, settings)


def holder_gone(worker: str | None) -> bool:
    """Whether the process a run names (``host:pid:...``) is known dead: on this host, with no such pid."""
    host, _, rest = (worker or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's processes cannot be seen from here: only the overdue rule applies
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return False


def close_broken(sessions: sessionmaker[Session], now: datetime, settings: Settings) -> list[str]:
    """Clear ``will_retry`` on every ``cli`` run whose promised retry will never come; their datasets."""
    promising = SyncRun.will_retry & (SyncRun.trigger == "cli") & (SyncRun.status == "failed")
    with sessions.begin() as session:
        runs = [run for run in session.scalars(select(SyncRun).where(promising)) if broken(run, now, settings)]
        for run in runs:
            run.will_retry = False
    return [run.dataset_key for run in runs]

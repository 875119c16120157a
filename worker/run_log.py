"""Reading the run history (``sync_runs``) for operators: filters, newest first, paged."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models.schema import RUN_STATUSES, SyncRun
from worker.health import iso

RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class RunQueryError(ValueError):
    """A filter the history cannot be read with; the message says which and why."""


def parse_since(text: str, now: datetime) -> datetime:
    """``2h``, ``3d``, ``30m`` back from now, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    match = RELATIVE.match(text.strip().lower())
    if match:
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise RunQueryError(f"since {text!r}: give an ISO date/time (2026-11-30T08:00Z) or an age (2h, 3d)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=now.tzinfo)


def list_runs(
    sessions: sessionmaker[Session],
    key: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page of runs newest first)."""
    if status is not None and status not in RUN_STATUSES:
        raise RunQueryError(f"status {status!r}: expected one of {', '.join(RUN_STATUSES)}")
    conditions = []
    if key:
        conditions.append(SyncRun.dataset_key == key)
    if status:
        conditions.append(SyncRun.status == status)
    if since:
        conditions.append(SyncRun.started_at >= since)
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(SyncRun).where(*conditions)) or 0
        runs = session.scalars(
            select(SyncRun).where(*conditions).order_by(SyncRun.id.desc()).limit(limit).offset(offset)
        )
        return total, [run_json(run) for run in runs]


def run_json(run: SyncRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "dataset": run.dataset_key,
        "status": run.status,
        "trigger": run.trigger,
        "attempt": run.attempt,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "options_before": run.options_before,
        "options_after": run.options_after,
        "codes_added": run.codes_added,
        "codes_removed": run.codes_removed,
        "codes_relabelled": run.codes_relabelled,
        "version_after": run.version_after,
        "error_kind": run.error_kind,
        "error": run.error_message,
        "will_retry": run.will_retry,
        "worker": run.worker,
    }

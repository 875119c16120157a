"""Reading the run history (``sync_runs``) for operators: filters, newest first, paged."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from models.schema import RUN_STATUSES, SyncRun
from worker import cli_promises
from worker.health import iso
from worker.settings import Settings

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
    *,
    now: datetime,
    settings: Settings,
) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page of runs newest first), each as ``run_json`` reads it at ``now``."""
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
        return total, [run_json(run, now, settings) for run in runs]


def run_json(run: SyncRun, now: datetime, settings: Settings) -> dict[str, Any]:
    """One run for operators; a retry promised by a ``datasync sync`` that is gone reads as none (``cli_promises``)."""
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
        "will_retry": cli_promises.still_promised(run, now, settings),
        "worker": run.worker,
        "bytes_fetched": run.bytes_fetched,
    }


def run_counts(sessions: sessionmaker[Session]) -> list[tuple[str, str, str, int]]:
    """(status, trigger, error kind or "", count) over the kept history."""
    with sessions() as session:
        query = select(SyncRun.status, SyncRun.trigger, SyncRun.error_kind, func.count()).group_by(
            SyncRun.status, SyncRun.trigger, SyncRun.error_kind
        )
        return [(status, trigger, kind or "", count) for status, trigger, kind, count in session.execute(query).all()]


def bytes_fetched(sessions: sessionmaker[Session]) -> list[tuple[str, int]]:
    """(dataset, body bytes its kept runs downloaded), for every dataset with a run that recorded some."""
    query = (
        select(SyncRun.dataset_key, func.sum(SyncRun.bytes_fetched))
        .where(SyncRun.bytes_fetched.is_not(None))
        .group_by(SyncRun.dataset_key)
        .order_by(SyncRun.dataset_key)
    )
    with sessions() as session:
        return [(key, int(total or 0)) for key, total in session.execute(query).all()]


def duration_histogram(sessions: sessionmaker[Session], bounds: tuple[float, ...]) -> tuple[list[int], int, float]:
    """Cumulative counts of finished syncs (not skips) at or under each bound, the total and the sum."""
    finished = SyncRun.duration_seconds.is_not(None) & SyncRun.status.not_in(("running", "skipped"))
    columns = [func.sum(case((SyncRun.duration_seconds <= bound, 1), else_=0)) for bound in bounds]
    with sessions() as session:
        row = session.execute(select(func.count(), func.sum(SyncRun.duration_seconds), *columns).where(finished)).one()
    return [int(value or 0) for value in row[2:]], int(row[0] or 0), float(row[1] or 0.0)


def recent_runs(sessions: sessionmaker[Session], per_dataset: int) -> dict[str, list[SyncRun]]:
    """Each dataset's newest finished, non-skipped runs, oldest first (for a small chart)."""
    ranked = (
        select(
            SyncRun.id,
            func.row_number().over(partition_by=SyncRun.dataset_key, order_by=SyncRun.id.desc()).label("rank"),
        )
        .where(SyncRun.status.not_in(("running", "skipped")))
        .subquery()
    )
    query = select(SyncRun).join(ranked, SyncRun.id == ranked.c.id).where(ranked.c.rank <= per_dataset)
    by_key: dict[str, list[SyncRun]] = {}
    with sessions() as session:
        for run in session.scalars(query.order_by(SyncRun.id)):
            by_key.setdefault(run.dataset_key, []).append(run)
    return by_key

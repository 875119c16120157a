"""The sync status of every dataset, in one shape for the CLI, the status API and monitoring."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.datasets import StoredDataset, table_of
from models.schema import SyncRun, SyncState
from models.types import utcnow
from worker.catalogue import Catalogue
from worker.pipeline import is_due
from worker.runs import latest_finished_runs
from worker.settings import Settings


def dataset_status(sessions: sessionmaker[Session], catalogue: Catalogue, settings: Settings) -> list[dict[str, Any]]:
    """Catalogue datasets first (in catalogue order), then any other synced rows in the store."""
    now = utcnow()
    with sessions() as session:
        datasets = {d.key: d for d in table_of(session).synced(session)}
        states = {s.dataset_key: s for s in session.scalars(select(SyncState))}
        last_runs = _last_finished_runs(session)
    entries = catalogue.by_key()
    keys = list(entries) + sorted(key for key in datasets if key not in entries)
    rows = []
    for key in keys:
        dataset, state, run, entry = datasets.get(key), states.get(key), last_runs.get(key), entries.get(key)
        rows.append(
            {
                "key": key,
                "name": dataset.name if dataset else entries[key].name,
                "category": dataset.category if dataset else entries[key].category,
                "in_catalogue": entry is not None,
                "options_count": len(dataset.options) if dataset else 0,
                "version": dataset.version if dataset else None,
                "last_scraped": _iso(dataset.last_scraped if dataset else None),
                "last_synced_at": _iso(dataset.last_synced_at if dataset else None),
                "last_success_at": _iso(state.last_success_at if state else None),
                "last_run": _run_json(run),
                "consecutive_failures": state.consecutive_failures if state else 0,
                "held": bool(state and state.held_options is not None),
                "held_reason": state.held_reason if state else None,
                **_held_change(dataset, state),
                "paused": bool(state and state.paused),
                "paused_reason": state.paused_reason if state else None,
                "syncing": bool(state and state.lease_live(now)),
                "due": bool(entry and entry.enabled and is_due(entry, state, now, settings)),
            }
        )
    return rows


def _held_change(dataset: StoredDataset | None, state: SyncState | None) -> dict[str, Any]:
    """The pending diff of a held change: counts for a glance, codes for the review."""
    if dataset is None or state is None or state.held_options is None:
        return {"held_changes": None, "held_diff": None}
    diff = dataset.diff_to(state.held_options)
    return {"held_changes": diff.counts(), "held_diff": diff.to_json()}


def _last_finished_runs(session: Session) -> dict[str, SyncRun]:
    latest = latest_finished_runs()
    runs = session.scalars(select(SyncRun).join(latest, SyncRun.id == latest.c.id))
    return {run.dataset_key: run for run in runs}


def _run_json(run: SyncRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "status": run.status,
        "trigger": run.trigger,
        "finished_at": _iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "codes_added": run.codes_added,
        "codes_removed": run.codes_removed,
        "codes_relabelled": run.codes_relabelled,
        "error_kind": run.error_kind,
        "error": run.error_message,
        "will_retry": run.will_retry,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None

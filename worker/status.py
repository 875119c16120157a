"""The sync status of every dataset, in one shape for the CLI, the status API and monitoring."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.datasets import StoredDataset, table_of
from models.db import reading
from models.schema import SyncState
from models.types import utcnow
from publisher.publish import publications_with_errors
from worker.catalogue import Catalogue
from worker.health import assess, iso, last_runs
from worker.pipeline import is_due
from worker.run_log import run_json
from worker.settings import Settings


def dataset_status(
    sessions: sessionmaker[Session], catalogue: Catalogue, settings: Settings, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Catalogue datasets first (in catalogue order), then any other synced rows in the store."""
    now = now or utcnow()
    with reading(sessions)() as session:
        datasets = {d.key: d for d in table_of(session).synced(session)}
        states = {s.dataset_key: s for s in session.scalars(select(SyncState))}
        runs = last_runs(session)
        publish_errors = publications_with_errors(session)
    entries = catalogue.by_key()
    keys = list(entries) + sorted(key for key in datasets if key not in entries)
    rows = []
    for key in keys:
        dataset, state, run, entry = datasets.get(key), states.get(key), runs.get(key), entries.get(key)
        health = assess(key, entry, state, run, now, settings)
        rows.append(
            {
                "key": key,
                "name": dataset.name if dataset else entries[key].name,
                "category": dataset.category if dataset else entries[key].category,
                "in_catalogue": entry is not None,
                "options_count": len(dataset.options) if dataset else 0,
                "version": dataset.version if dataset else None,
                "last_scraped": iso(dataset.last_scraped if dataset else None),
                "last_synced_at": iso(dataset.last_synced_at if dataset else None),
                "last_success_at": iso(state.last_success_at if state else None),
                "last_run": run_json(run) if run else None,
                "consecutive_failures": state.consecutive_failures if state else 0,
                "held": bool(state and state.held_options is not None),
                "held_reason": state.held_reason if state else None,
                **_held_change(dataset, state),
                "paused": bool(state and state.paused),
                "paused_reason": state.paused_reason if state else None,
                "syncing": bool(state and state.lease_live(now)),
                "due": bool(entry and entry.enabled and is_due(entry, state, now, settings)),
                "publish_error": publish_errors.get(key),
                **health.to_json(),
            }
        )
    return rows


def _held_change(dataset: StoredDataset | None, state: SyncState | None) -> dict[str, Any]:
    """The pending diff of a held change: counts for a glance, codes for the review."""
    if dataset is None or state is None or state.held_options is None:
        return {"held_changes": None, "held_diff": None}
    diff = dataset.diff_to(state.held_options)
    return {"held_changes": diff.counts(), "held_diff": diff.to_json()}

"""The sync status of every dataset, in one shape for the CLI, the status API and monitoring.

Rows come one at a time, read a chunk of datasets per short session, so a store of any size is
reported in the same small memory and no transaction stays open while a terminal prints: the
database counts each stored list's codes (a list is read only to show a held change's diff).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.datasets import DatasetSummary, StoredDataset, table_of
from models.db import reading
from models.schema import SyncRun, SyncState
from models.types import utcnow
from publisher.publish import publications_with_errors
from worker.catalogue import Catalogue, CatalogueEntry
from worker.health import assess, iso, last_runs
from worker.pipeline import is_due
from worker.run_log import run_json
from worker.settings import Settings

CHUNK = 500  # datasets per read: bounds memory, and each IN list stays far below SQLite's variable limit
T = TypeVar("T")


@dataclass(frozen=True)
class _Chunk:
    """What the store holds for one chunk of keys."""

    datasets: Mapping[str, DatasetSummary]
    states: Mapping[str, SyncState]
    runs: Mapping[str, SyncRun]
    held: Mapping[str, StoredDataset]


def dataset_status(
    sessions: sessionmaker[Session], catalogue: Catalogue, settings: Settings, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Every row as one list, for callers that want them all at once; ``status_rows`` streams them."""
    return list(status_rows(sessions, catalogue, settings, now))


def status_rows(
    sessions: sessionmaker[Session], catalogue: Catalogue, settings: Settings, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Catalogue datasets first (in catalogue order), then any other synced rows in the store (by key)."""
    now = now or utcnow()
    sessions = reading(sessions)  # every read below runs beside a sync's writes, never waiting on them
    entries = catalogue.by_key()
    with sessions() as session:
        publish_errors = publications_with_errors(session)
    for keys in batched(entries, CHUNK):
        yield from _rows(sessions, keys, entries, publish_errors, now, settings)
    for keys in _stored_only(sessions, entries):
        yield from _rows(sessions, keys, entries, publish_errors, now, settings)


def longest_key_and_category(sessions: sessionmaker[Session], catalogue: Catalogue) -> tuple[int, int]:
    """The widest key and category any status row can have, so a streamed table is sized before its rows."""
    with reading(sessions)() as session:
        stored_key, stored_category = table_of(session).longest(session)
    entries = catalogue.entries
    key = max([stored_key, *(len(entry.key) for entry in entries)])
    category = max([stored_category, *(len(entry.category) for entry in entries)])
    return key, category


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter), taken as they come."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stored_only(sessions: sessionmaker[Session], entries: Mapping[str, CatalogueEntry]) -> Iterator[list[str]]:
    """Keys of synced rows the catalogue lacks, in key order, a page per short session."""
    after: str | None = None
    while True:
        with sessions() as session:
            page = table_of(session).synced_keys(session, after, CHUNK)
        if not page:
            return
        after = page[-1]
        if others := [key for key in page if key not in entries]:
            yield others


def _read(sessions: sessionmaker[Session], keys: list[str]) -> _Chunk:
    with sessions() as session:
        table = table_of(session)
        datasets = {summary.key: summary for summary in table.summaries(session, keys)}
        states = {s.dataset_key: s for s in session.scalars(select(SyncState).where(SyncState.dataset_key.in_(keys)))}
        held_keys = [key for key, state in states.items() if state.held_options is not None and key in datasets]
        held = {stored.key: stored for stored in table.synced(session, held_keys)} if held_keys else {}
        return _Chunk(datasets, states, last_runs(session, keys), held)


def _rows(
    sessions: sessionmaker[Session],
    keys: list[str],
    entries: Mapping[str, CatalogueEntry],
    publish_errors: Mapping[str, dict[str, Any]],
    now: datetime,
    settings: Settings,
) -> Iterator[dict[str, Any]]:
    found = _read(sessions, keys)
    for key in keys:
        dataset, state, run, entry = (
            found.datasets.get(key),
            found.states.get(key),
            found.runs.get(key),
            entries.get(key),
        )
        health = assess(key, entry, state, run, now, settings)
        yield {
            "key": key,
            "name": dataset.name if dataset else entries[key].name,
            "category": dataset.category if dataset else entries[key].category,
            "in_catalogue": entry is not None,
            "options_count": dataset.options_count if dataset else 0,
            "version": dataset.version if dataset else None,
            "last_scraped": iso(dataset.last_scraped if dataset else None),
            "last_synced_at": iso(dataset.last_synced_at if dataset else None),
            "last_success_at": iso(state.last_success_at if state else None),
            "last_run": _last_run(run, now, settings),
            "consecutive_failures": state.consecutive_failures if state else 0,
            "held": bool(state and state.held_options is not None),
            "held_reason": state.held_reason if state else None,
            **_held_change(found.held.get(key), state),
            "paused": bool(state and state.paused),
            "paused_reason": state.paused_reason if state else None,
            "syncing": bool(state and state.lease_live(now)),
            "due": bool(entry and entry.enabled and is_due(entry, state, now, settings)),
            "publish_error": publish_errors.get(key),
            **health.to_json(),
        }


def _last_run(run: SyncRun | None, now: datetime, settings: Settings) -> dict[str, Any] | None:
    return None if run is None else run_json(run, now, settings)


def _held_change(dataset: StoredDataset | None, state: SyncState | None) -> dict[str, Any]:
    """The pending diff of a held change: counts for a glance, codes for the review."""
    if dataset is None or state is None or state.held_options is None:
        return {"held_changes": None, "held_diff": None}
    diff = dataset.diff_to(state.held_options)
    return {"held_changes": diff.counts(), "held_diff": diff.to_json()}

"""Plain functions behind the HTTP API: datasets in the platform's shapes (seed 000) with a ``sync``
object each, visibility rules, pagination. No web framework here, so they are easy to test and reuse.

Rows are read through the store profile's dataset table (``models.datasets.table_of``), as plain
mappings, so the API serves datasync's ``datasets`` and the platform's ``surveys_dataset`` alike."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.datasets import table_of
from worker.apikeys import Caller
from worker.catalogue import Catalogue, CatalogueError, load_catalogue
from worker.health import STATES, DatasetHealth, health_by_key, iso
from worker.settings import Settings

MAX_PAGE_SIZE = 100
log = logging.getLogger(__name__)
Row = Mapping[str, Any]


@dataclass(frozen=True)
class DatasetFilters:
    category: str | None = None
    tags: tuple[str, ...] = ()
    search: str | None = None
    is_global: bool | None = None

    def match(self, dataset: Row) -> bool:
        if self.category and dataset["category"] != self.category:
            return False
        if self.is_global is not None and dataset["is_global"] != self.is_global:
            return False
        if self.tags and not set(self.tags) <= set(dataset["tags"]):
            return False
        needle = (self.search or "").strip().lower()
        return not needle or needle in dataset["name"].lower() or needle in (dataset["description"] or "").lower()


def owned_by_people(dataset: Row) -> bool:
    """Rows people made or customised: a sync never writes them."""
    return bool(dataset["is_custom"]) or dataset["category"] == "user_created"


def visible(dataset: Row, caller: Caller) -> bool:
    """Anonymous callers see global rows; key holders also see synced non-global rows. Rows people own
    are shown only once published (global): an API key carries no rights to anyone's private rows."""
    if not dataset["is_active"]:
        return False
    if dataset["is_global"]:
        return True
    return caller.authenticated and not owned_by_people(dataset)


def _options(dataset: Row) -> dict[str, Any]:
    """The stored list (the platform's default for none is ``[]``)."""
    return dict(dataset["options"]) if isinstance(dataset["options"], dict) else {}


def dataset_json(
    dataset: Row, parent: Row | None, health: DatasetHealth | None, detail: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": dataset["key"],
        "name": dataset["name"],
        "description": dataset["description"],
        "category": dataset["category"],
        "source_type": dataset["source_type"],
        "is_custom": dataset["is_custom"],
        "is_global": dataset["is_global"],
        "parent": parent["key"] if parent else None,
        "parent_name": parent["name"] if parent else None,
        "organization": dataset["organization_id"],
        "organization_name": None,
        "tags": list(dataset["tags"]),
    }
    if detail:
        body |= {"options": _options(dataset), "format_pattern": dataset["format_pattern"]}
    else:
        body["options_count"] = len(_options(dataset))
    body |= {
        "created_at": iso(dataset["created_at"]),
        "updated_at": iso(dataset["updated_at"]),
        "last_synced_at": iso(dataset["last_synced_at"]),
        "last_scraped": iso(dataset["last_scraped"]),
        "is_editable": False,
        "reference_url": dataset["reference_url"],
        "sync": health.to_json() if health else None,
    }
    return body


class CatalogueFile:
    """The catalogue a long-running server answers with, re-read when the file changes; an invalid
    edit is logged and the last good catalogue kept, as the workers do."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue, self._mtime = catalogue, _mtime(catalogue.path)
        self._lock = threading.Lock()

    def current(self) -> Catalogue:
        mtime = _mtime(self._catalogue.path)
        with self._lock:
            if mtime != self._mtime:
                self._mtime = mtime
                try:
                    self._catalogue = load_catalogue(self._catalogue.path)
                except CatalogueError as exc:
                    log.error("catalogue edit rejected, still using the previous one: %s", exc)
            return self._catalogue


def _mtime(path: Path) -> tuple[int, int] | None:
    """Modification time and size: a quick rewrite can keep the (coarse) mtime, rarely the size too."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class DatasetReader:
    """Datasets as the API shows them, with health from the one model."""

    def __init__(self, sessions: sessionmaker[Session], catalogue: CatalogueFile, settings: Settings) -> None:
        self.sessions, self.settings = sessions, settings
        self._catalogue = catalogue

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue.current()

    def _rows(self, caller: Caller, key: str | None = None) -> list[tuple[Row, Row | None]]:
        """Visible rows with their parent (the platform's table as datasync maps it has no parent column)."""
        with self.sessions() as session:
            table = table_of(session).table
            query = select(table).order_by(table.c.key)
            if key is not None:
                query = query.where(table.c.key == key)
            rows = [dict(found) for found in session.execute(query).mappings()]
            parent_ids = {row["parent_id"] for row in rows if row.get("parent_id") is not None}
            parents = select(table).where(table.c.id.in_(parent_ids))
            by_id = {parent["id"]: dict(parent) for parent in session.execute(parents).mappings()} if parent_ids else {}
        return [(row, by_id.get(row.get("parent_id"))) for row in rows if visible(row, caller)]

    def _health(self, datasets: list[Row], now: datetime) -> dict[str, DatasetHealth]:
        keys = [d["key"] for d in datasets if not owned_by_people(d)]
        return health_by_key(self.sessions, self.catalogue, self.settings, now, keys)

    def matching(self, caller: Caller, filters: DatasetFilters, now: datetime) -> list[dict[str, Any]]:
        rows = [(d, p) for d, p in self._rows(caller) if filters.match(d)]
        health = self._health([d for d, _ in rows], now)
        return [dataset_json(d, p, health.get(d["key"])) for d, p in rows]

    def get(self, caller: Caller, key: str, now: datetime) -> dict[str, Any] | None:
        rows = self._rows(caller, key)
        if not rows:
            return None
        dataset, parent = rows[0]
        with self.sessions() as session:  # the platform's jsonb loses the source order; the history keeps it
            stored = table_of(session).load(session, key)
        ordered = {**dataset, "options": stored.options} if stored else dataset
        return dataset_json(ordered, parent, self._health([dataset], now).get(key), detail=True)

    def is_visible(self, caller: Caller, key: str) -> bool:
        return bool(self._rows(caller, key))

    def tags(self, caller: Caller) -> list[dict[str, Any]]:
        counts = Counter(tag for dataset, _ in self._rows(caller) for tag in dataset["tags"])
        return [{"tag": tag, "count": count} for tag, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def all_health(self, now: datetime) -> list[tuple[str, str, str, int, DatasetHealth]]:
        """(key, name, category, options count, health) for every catalogue entry and synced row."""
        with self.sessions() as session:
            stored = {d.key: (d.name, d.category, len(d.options)) for d in table_of(session).synced(session)}
        entries = self.catalogue.by_key()
        keys = list(entries) + sorted(k for k in stored if k not in entries)
        health = health_by_key(self.sessions, self.catalogue, self.settings, now, keys)
        facts = {key: (entry.name, entry.category, 0) for key, entry in entries.items()} | stored
        return [(key, *facts[key], health[key]) for key in keys]

    def sync_overview(self, now: datetime) -> dict[str, Any]:
        """Counts per state over every catalogue dataset and synced row; the ones not ``ok``, with why."""
        rows = self.all_health(now)
        counts = Counter(health.state for *_, health in rows)
        attention = [
            {"key": key, "name": name, "category": category, "sync": health.to_json()}
            for key, name, category, _, health in rows
            if health.state != "ok"
        ]
        return {"counts": {state: counts.get(state, 0) for state in STATES}, "datasets": attention}

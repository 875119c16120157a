"""What a sync writes into the dataset table: create, update or just stamp, plus its history row.

This is the one place that says which columns a sync writes, under either store profile
(``models/datasets.py`` says where the row lives). The caller owns the transaction, so the
dataset row, its version row, the run record and the sync state commit together or not at all:
a crash mid-sync leaves the old row intact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import CTE, ColumnElement, String, Update, and_, bindparam, exists, insert, literal, or_, update
from sqlalchemy.orm import Session

from models.datasets import SYNCED_CATEGORIES, SYNCED_SOURCE_TYPES, DatasetTable, StoredDataset, table_of
from models.diff import OptionsDiff
from models.schema import DatasetVersion

# Fields the platform shows next to the list: a change to them is a new version of the dataset.
VERSIONED_FIELDS = ("name", "description", "tags", "reference_url", "organization_id", "team_id")
# How datasync fetches the list: kept current on the row, but not a change people see.
SOURCE_FIELDS = ("category", "source_type", "external_api_url", "format_pattern", "sync_frequency_hours")
METADATA_FIELDS = VERSIONED_FIELDS + SOURCE_FIELDS
# The platform's own columns for where a list comes from, derived from the entry like the source fields.
PLATFORM_SOURCE_COLUMNS = ("nhs_dd_page_id", "external_api_endpoint")
# NOT NULL platform columns datasync has no value for, set on insert as the platform's own code
# would (its database has no defaults); an update leaves them as the platform keeps them.
PLATFORM_BLANKS: dict[str, Any] = {
    "snomed_refset_id": "",
    "snomed_query_type": "",
    "snomed_ecl": "",
    "is_featured": False,
}


class OwnedByPeople(Exception):
    """The key belongs to a row people made or customised; syncs never write to it."""


@dataclass(frozen=True)
class DatasetSpec:
    """The platform-facing fields a sync writes, as the catalogue defines them."""

    key: str
    name: str
    description: str
    category: str
    source_type: str
    tags: list[str]
    reference_url: str | None
    external_api_url: str | None
    format_pattern: str
    sync_frequency_hours: float | None
    organization_id: int | None = None
    team_id: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """A list to store: options plus the codes flagged retired or default."""

    options: dict[str, str]
    content_hash: str
    retired_codes: list[str] = field(default_factory=list)
    default_codes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UpsertResult:
    status: str
    version: int
    diff: OptionsDiff
    options_before: int
    options_after: int


def load_dataset(session: Session, key: str, *, for_update: bool = False) -> StoredDataset | None:
    return table_of(session).load(session, key, for_update=for_update)


def load_syncable(session: Session, key: str) -> StoredDataset | None:
    """The row a sync may write (locked), or None; refuses rows that belong to people.

    A row datasync has no history for is written only if a sync made it (adoption): a hand-made
    list that happens to carry a catalogue key stays the platform's.
    """
    table = table_of(session)
    dataset = table.load(session, key, for_update=True)
    if dataset is None:
        return None
    where = f"dataset {key!r} in {table.display_name}"
    if dataset.owned_by_people:
        raise OwnedByPeople(f"{where} is a custom or user-created row; datasync never writes to it")
    if not dataset.has_baseline and not dataset.made_by_a_sync:
        raise OwnedByPeople(
            f"{where} was not made by a sync (category {dataset.category!r}, source type "
            f"{dataset.row['source_type']!r}); datasync adopts only synced rows and leaves it untouched"
        )
    return dataset


def spec_from_dataset(dataset: StoredDataset) -> DatasetSpec:
    """The row's own metadata, for writes that change only options (rollback, accept)."""
    return DatasetSpec(**{name: dataset.row[name] for name in ("key", *METADATA_FIELDS)})


def upsert_dataset(
    session: Session,
    spec: DatasetSpec,
    snapshot: Snapshot,
    *,
    stamp_field: str | None,
    now: datetime,
    run_id: int | None,
    origin: str = "sync",
) -> UpsertResult:
    """Create, update or leave the row; ``stamp_field`` (if any) records that the list was verified.

    A row datasync has no history for (made by the platform's own sync before datasync) is adopted:
    its version continues, and only a change the row itself shows makes a new version.
    """
    current = load_syncable(session, spec.key)
    return write_dataset(
        session, current, spec, snapshot, stamp_field=stamp_field, now=now, run_id=run_id, origin=origin
    )


def write_dataset(
    session: Session,
    current: StoredDataset | None,
    spec: DatasetSpec,
    snapshot: Snapshot,
    *,
    stamp_field: str | None,
    now: datetime,
    run_id: int | None,
    origin: str = "sync",
) -> UpsertResult:
    """``upsert_dataset`` for a caller that already holds ``current`` from ``load_syncable`` in this
    transaction (the pipeline, which guards on it first): the row is not read twice."""
    table = table_of(session)
    stamp = {stamp_field: now} if stamp_field else {}
    metadata = metadata_values(table, spec)
    count = len(snapshot.options)
    if current is None:
        table.insert(session, {**new_row_values(table, spec, now), **metadata, **list_values(table, snapshot), **stamp})
        diff = OptionsDiff.between({}, snapshot.options)
        _record_version(session, spec.key, 1, snapshot, diff, run_id, origin, now)
        return UpsertResult("created", 1, diff, 0, count)

    diff = current.diff_to(snapshot.options)
    changed = _list_changed(current, snapshot) or _differs(current, metadata, VERSIONED_FIELDS)
    version = current.version + 1 if changed else current.version
    if changed:
        values = {**metadata, **list_values(table, snapshot), "version": version, "updated_at": now}
        if _differs(current, metadata, ("organization_id", "team_id")):
            values["is_global"] = spec.organization_id is None and spec.team_id is None
    else:
        values = {name: value for name, value in metadata.items() if current.row[name] != value}
        if not current.order_known:  # adopted: from now on the row's list is the one datasync knows
            values.update(list_values(table, snapshot))
    table.update(session, current.id, {**values, **stamp})
    if changed or not current.has_baseline:
        _record_version(session, spec.key, version, snapshot, diff, run_id, origin if changed else "adopted", now)
    return UpsertResult("updated" if changed else "unchanged", version, diff, len(current.options), count)


@dataclass(frozen=True)
class Verified:
    """What a sync reports of a list the upstream confirmed unchanged."""

    version: int
    options: int


def stamp_verified(session: Session, key: str, stamp_field: str, now: datetime) -> Verified | None:
    """The upstream confirmed our copy is current (e.g. HTTP 304): move only the stamp.

    One ``UPDATE ... RETURNING``, guarded in SQL by ``load_syncable``'s rule; only when it matches
    nothing is the row read, to refuse a row people own by name (``OwnedByPeople``) or say None.
    """
    stamping = _stamping(table_of(session), stamp_field)
    stamped = session.connection().execute(stamping, {"dataset": key, "now": now}).first()
    if stamped is None:
        load_syncable(session, key)
        return None
    version, options = stamped
    return Verified(version, len(options) if isinstance(options, dict) else 0)


@functools.cache
def _stamping(table: DatasetTable, stamp_field: str) -> Update:
    """``stamp_verified``'s UPDATE, built once per table and stamp (key and time bound at execution)."""
    return _stamp(table, stamp_field).returning(table.table.c.version, table.table.c.options)


def stamping_cte(table: DatasetTable, stamp_field: str) -> CTE:
    """``stamp_verified``'s UPDATE as a PostgreSQL CTE, ``stamped``, answering the version and the code
    count (``DatasetTable.code_count``), for a statement that ends a 304 in one round trip."""
    columns, codes = table.table.c, table.code_count("postgresql").label("codes")
    return _stamp(table, stamp_field).returning(columns.version, codes).cte("stamped")


def _stamp(table: DatasetTable, stamp_field: str) -> Update:
    """Move the stamp of the row ``dataset`` to ``now`` where ``load_syncable`` would sync it."""
    columns = table.table.c
    return (
        update(table.table)
        .where(columns.key == bindparam("dataset"), _syncable(table))
        .values({stamp_field: bindparam("now", type_=columns[stamp_field].type)})
    )


def _syncable(table: DatasetTable) -> ColumnElement[bool]:
    """``load_syncable``'s rule in SQL (``StoredDataset.owned_by_people``, ``has_baseline``,
    ``made_by_a_sync``): not people's, and with a matching history row or made by a sync."""
    columns, history = table.table.c, DatasetVersion.__table__.c
    has_baseline = exists().where(history.dataset_key == columns.key, history.version == columns.version)
    made_by_a_sync = and_(
        columns.category.in_(_constants(SYNCED_CATEGORIES)), columns.source_type.in_(_constants(SYNCED_SOURCE_TYPES))
    )
    # made_by_a_sync first: PostgreSQL stops at it for a synced row, before building a hash of every history row
    return and_(columns.is_custom.is_(False), columns.category != "user_created", or_(made_by_a_sync, has_baseline))


def _constants(values: frozenset[str]) -> list[ColumnElement[str]]:
    """``IN`` items bound one by one, so the compiled statement is reused as it is; a list ``in_`` expands
    at every execution."""
    return [literal(value, String()) for value in sorted(values)]


def metadata_values(table: DatasetTable, spec: DatasetSpec) -> dict[str, Any]:
    """The entry's metadata as the table's columns hold it; the platform's are NOT NULL and integral."""
    values: dict[str, Any] = {name: getattr(spec, name) for name in METADATA_FIELDS}
    values["tags"] = list(spec.tags)
    if table.is_platform:
        values.update(
            reference_url=spec.reference_url or "",
            external_api_url=spec.external_api_url or "",
            sync_frequency_hours=whole_hours(spec.sync_frequency_hours),
            nhs_dd_page_id=nhs_dd_page_id(spec.category, spec.reference_url),
            external_api_endpoint=api_endpoint(spec.external_api_url),
        )
    return values


def new_row_values(table: DatasetTable, spec: DatasetSpec, now: datetime) -> dict[str, Any]:
    """Columns set once, when a sync creates the row."""
    values = {
        "key": spec.key,
        "is_custom": False,
        "is_global": spec.organization_id is None and spec.team_id is None,
        "is_active": True,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    return {**values, **PLATFORM_BLANKS} if table.is_platform else values


def list_values(table: DatasetTable, snapshot: Snapshot) -> dict[str, Any]:
    """The list itself: always a plain ``{code: label}`` object, the one shape the platform reads."""
    values: dict[str, Any] = {"options": dict(snapshot.options)}
    if table.lists_on_row:
        values.update(
            content_hash=snapshot.content_hash,
            retired_codes=list(snapshot.retired_codes),
            default_codes=list(snapshot.default_codes),
        )
    return values


def nhs_dd_page_id(category: str, reference_url: str | None) -> str:
    """The NHS Data Dictionary page's name (``ethnic_category`` for ``.../ethnic_category.html``)."""
    if category != "nhs_dd" or not reference_url:
        return ""
    return urlsplit(reference_url).path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".html")


def api_endpoint(url: str | None) -> str:
    """The API route an entry reads (path and query), as the platform's own sync recorded it."""
    if not url:
        return ""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def whole_hours(hours: float | None) -> int | None:
    """The platform keeps whole hours: round half up, and never below one hour."""
    return None if hours is None else max(1, int(hours + 0.5))


def _list_changed(current: StoredDataset, snapshot: Snapshot) -> bool:
    if current.order_known:
        return (
            current.content_hash != snapshot.content_hash
            or current.retired_codes != snapshot.retired_codes
            or current.default_codes != snapshot.default_codes
        )
    # No history describes this row: compare what it shows. A history row that disagrees with it
    # means the list was edited outside datasync, and the sync's list becomes a new version.
    return current.has_baseline or current.options != snapshot.options


def _differs(current: StoredDataset, values: dict[str, Any], fields: tuple[str, ...]) -> bool:
    return any(current.row[name] != values[name] for name in fields)


def _record_version(
    session: Session,
    key: str,
    version: int,
    snapshot: Snapshot,
    diff: OptionsDiff,
    run_id: int | None,
    origin: str,
    now: datetime,
) -> None:
    counts = diff.counts() if origin != "adopted" else {"added": 0, "removed": 0, "relabelled": 0}
    version_row = {
        "dataset_key": key,
        "version": version,
        "options": dict(snapshot.options),
        "retired_codes": list(snapshot.retired_codes),
        "default_codes": list(snapshot.default_codes),
        "content_hash": snapshot.content_hash,
        "created_at": now,
        "run_id": run_id,
        "origin": origin,
        "codes_added": counts["added"],
        "codes_removed": counts["removed"],
        "codes_relabelled": counts["relabelled"],
    }
    session.connection().execute(_ADD_VERSION, version_row)  # Core: no ORM unit of work for one row


_ADD_VERSION = insert(DatasetVersion)

"""Writing a synced list into ``datasets``: create, update or just stamp, plus its history row.

The caller owns the transaction, so the dataset row, its version row, the run record and the
sync state commit together or not at all: a crash mid-sync leaves the old row intact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from models.diff import OptionsDiff
from models.schema import Dataset, DatasetVersion

# Fields the platform shows next to the list: a change to them is a new version of the dataset.
VERSIONED_FIELDS = ("name", "description", "tags", "reference_url")
# How datasync fetches the list: kept current on the row, but not a change people see.
SOURCE_FIELDS = (
    "category",
    "source_type",
    "external_api_url",
    "format_pattern",
    "sync_frequency_hours",
    "organization_id",
)
METADATA_FIELDS = VERSIONED_FIELDS + SOURCE_FIELDS


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
    sync_frequency_hours: float
    organization_id: int | None = None  # an organisation's own list (e.g. its Charitylog): not global


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


def load_dataset(session: Session, key: str, *, for_update: bool = False) -> Dataset | None:
    query = select(Dataset).where(Dataset.key == key)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def load_syncable(session: Session, key: str) -> Dataset | None:
    """The row a sync may write (locked), or None; refuses rows that belong to people."""
    dataset = load_dataset(session, key, for_update=True)
    if dataset is not None and dataset.owned_by_people:
        raise OwnedByPeople(f"dataset {key!r} is a custom or user-created row; datasync never writes to it")
    return dataset


def spec_from_dataset(dataset: Dataset) -> DatasetSpec:
    """The row's own metadata, for writes that change only options (rollback, accept)."""
    return DatasetSpec(**{name: getattr(dataset, name) for name in ("key", *METADATA_FIELDS)})


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
    """Create, update or leave the row; ``stamp_field`` (if any) records that the list was verified."""
    dataset = load_syncable(session, spec.key)
    if dataset is None:
        dataset = Dataset(key=spec.key, is_custom=False, version=1, created_at=now, updated_at=now, is_active=True)
        _write(dataset, spec, snapshot)
        if stamp_field:
            setattr(dataset, stamp_field, now)
        session.add(dataset)
        session.flush()
        diff = OptionsDiff.between({}, snapshot.options)
        _record_version(session, dataset, diff, run_id, origin, now)
        return UpsertResult("created", dataset.version, diff, 0)

    before = len(dataset.options)
    diff = OptionsDiff.between(dataset.options, snapshot.options)
    options_changed = dataset.content_hash != snapshot.content_hash
    changed = options_changed or _differs(dataset, spec, VERSIONED_FIELDS) or _flags_changed(dataset, snapshot)
    if changed:
        _write(dataset, spec, snapshot)
        dataset.version += 1
        dataset.updated_at = now
    elif _differs(dataset, spec, SOURCE_FIELDS):
        _write_fields(dataset, spec, SOURCE_FIELDS)
    if stamp_field:
        setattr(dataset, stamp_field, now)
    if changed:
        _record_version(session, dataset, diff, run_id, origin, now)
    return UpsertResult("updated" if changed else "unchanged", dataset.version, diff, before)


def stamp_verified(session: Session, key: str, stamp_field: str, now: datetime) -> Dataset | None:
    """The upstream confirmed our copy is current (e.g. HTTP 304): move only the stamp."""
    dataset = load_syncable(session, key)
    if dataset is not None:
        setattr(dataset, stamp_field, now)
    return dataset


def _write(dataset: Dataset, spec: DatasetSpec, snapshot: Snapshot) -> None:
    _write_fields(dataset, spec, METADATA_FIELDS)
    dataset.tags = list(spec.tags)
    dataset.options = dict(snapshot.options)
    # Dicts that differ only in order compare equal, so SQLAlchemy would skip the write: force it,
    # since source order is part of the list.
    flag_modified(dataset, "options")
    dataset.content_hash = snapshot.content_hash
    dataset.retired_codes = list(snapshot.retired_codes)
    dataset.default_codes = list(snapshot.default_codes)


def _write_fields(dataset: Dataset, spec: DatasetSpec, fields: tuple[str, ...]) -> None:
    for name in fields:
        setattr(dataset, name, getattr(spec, name))
    dataset.is_global = dataset.organization_id is None


def _differs(dataset: Dataset, spec: DatasetSpec, fields: tuple[str, ...]) -> bool:
    return any(getattr(dataset, name) != getattr(spec, name) for name in fields)


def _flags_changed(dataset: Dataset, snapshot: Snapshot) -> bool:
    return dataset.retired_codes != snapshot.retired_codes or dataset.default_codes != snapshot.default_codes


def _record_version(
    session: Session, dataset: Dataset, diff: OptionsDiff, run_id: int | None, origin: str, now: datetime
) -> None:
    counts = diff.counts()
    session.add(
        DatasetVersion(
            dataset_key=dataset.key,
            version=dataset.version,
            options=dict(dataset.options),
            retired_codes=list(dataset.retired_codes),
            default_codes=list(dataset.default_codes),
            content_hash=dataset.content_hash or "",
            created_at=now,
            run_id=run_id,
            origin=origin,
            codes_added=counts["added"],
            codes_removed=counts["removed"],
            codes_relabelled=counts["relabelled"],
        )
    )

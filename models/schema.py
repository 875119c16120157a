"""The store: the platform's ``datasets`` table plus datasync's own bookkeeping tables.

``datasets`` uses the platform's field names (seed 000) so the platform reads our rows unchanged.
Everything datasync needs for itself (leases, validators, held changes, history) lives in
separate tables, so the platform's table carries nothing it does not know. Under the ``checktick``
store profile ``datasets`` is not created at all: datasets live in the platform's own table
(``models/datasets.py``) and only the bookkeeping tables here are datasync's.

``options`` is plain ``JSON`` (not ``JSONB``) on PostgreSQL on purpose: JSONB reorders object keys,
and the source order of a code list is what the dropdown shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.types import UTCDateTime, utcnow

CATEGORIES = ("nhs_dd", "rcpch", "external_api", "snomed", "reference", "user_created")
SOURCE_TYPES = ("scrape", "api", "manual", "imported")
TRIGGERS = ("cli", "schedule", "manual", "api")
RUN_STATUSES = ("running", "created", "updated", "unchanged", "failed", "skipped", "held")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(32), index=True)
    source_type: Mapped[str] = mapped_column(String(32))
    is_custom: Mapped[bool] = mapped_column(Boolean, default=False)
    is_global: Mapped[bool] = mapped_column(Boolean, default=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    organization_id: Mapped[int | None] = mapped_column(Integer)
    team_id: Mapped[int | None] = mapped_column(Integer)
    tags: Mapped[list[str]] = mapped_column(default=list)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    format_pattern: Mapped[str | None] = mapped_column(String(100))
    reference_url: Mapped[str | None] = mapped_column(String(2000))
    external_api_url: Mapped[str | None] = mapped_column(String(2000))
    sync_frequency_hours: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_synced_at: Mapped[datetime | None]
    last_scraped: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    retired_codes: Mapped[list[str]] = mapped_column(default=list)
    default_codes: Mapped[list[str]] = mapped_column(default=list)

    @property
    def owned_by_people(self) -> bool:
        """Rows people made or customised; a sync must never write to them."""
        return self.is_custom or self.category == "user_created"


class SyncRun(Base):
    """One row per sync attempt, whatever its outcome: the audit trail operators read."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_key: Mapped[str] = mapped_column(String(255), index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    options_before: Mapped[int | None] = mapped_column(Integer)
    options_after: Mapped[int | None] = mapped_column(Integer)
    codes_added: Mapped[int] = mapped_column(Integer, default=0)
    codes_removed: Mapped[int] = mapped_column(Integer, default=0)
    codes_relabelled: Mapped[int] = mapped_column(Integer, default=0)
    version_after: Mapped[int | None] = mapped_column(Integer)
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    warnings: Mapped[list[str]] = mapped_column(default=list)
    error_kind: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    will_retry: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(255))
    bytes_fetched: Mapped[int | None] = mapped_column(Integer)


class SyncState(Base):
    """datasync's private state per catalogue key: lease, validators, hold and freshness."""

    __tablename__ = "sync_state"

    dataset_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    etag: Mapped[str | None] = mapped_column(String(1000))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    source_token: Mapped[str | None] = mapped_column(String(255))
    last_success_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(16))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    held_options: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    held_retired: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    held_defaults: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    held_hash: Mapped[str | None] = mapped_column(String(64))
    held_reason: Mapped[str | None] = mapped_column(Text)
    held_at: Mapped[datetime | None]
    rejected_hash: Mapped[str | None] = mapped_column(String(64))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_reason: Mapped[str | None] = mapped_column(Text)

    def lease_live(self, now: datetime) -> bool:
        """Some worker holds the lease right now (an expired lease counts as free)."""
        return bool(self.lease_owner and self.lease_expires_at and self.lease_expires_at > now)


class DatasetVersion(Base):
    """Every options list a dataset has had, so changes can be read, diffed and undone."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_key", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_key: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True))
    retired_codes: Mapped[list[str]] = mapped_column(default=list)
    default_codes: Mapped[list[str]] = mapped_column(default=list)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id", ondelete="SET NULL"))
    origin: Mapped[str] = mapped_column(String(16), default="sync")
    codes_added: Mapped[int] = mapped_column(Integer, default=0)
    codes_removed: Mapped[int] = mapped_column(Integer, default=0)
    codes_relabelled: Mapped[int] = mapped_column(Integer, default=0)


class Publication(Base):
    """datasync's record of one dataset in the national data catalogue (``datasync publish``).

    ``record`` is the document the catalogue last accepted, so an unchanged dataset costs no
    request; ``errors`` holds the last failure's located problems until a publish succeeds.
    """

    __tablename__ = "publications"

    dataset_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    catalogue_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(16))
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    published_version: Mapped[int | None] = mapped_column(Integer)
    published_at: Mapped[datetime | None]
    attempted_at: Mapped[datetime | None]
    rejected_version: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))

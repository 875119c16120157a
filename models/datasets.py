"""Where dataset rows live: datasync's own ``datasets`` table, or the platform's ``surveys_dataset``.

The store profile picks one ``DatasetTable`` at start. The upsert, the review actions and status
read and write datasets only through it, so both profiles run the same sync code; the sessions of
a store carry their table in ``session.info``.

The platform's table is owned by its (Django) migrations: datasync never runs DDL on it, it only
checks at start that every column it reads or writes is there with a type that fits. That table
has no room for datasync's list bookkeeping (content hash, retired and default codes, the source
order PostgreSQL's jsonb loses), so under that profile those come from ``dataset_versions``.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Integer,
    MetaData,
    Row,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import ColumnElement, Insert, Update, sqltypes

from models.diff import OptionsDiff
from models.schema import Base, DatasetVersion
from models.types import UTCDateTime

PROFILES = ("datasync", "checktick")
NUMBERS = (sqltypes.Numeric, sqltypes.Float)
# Categories and source types a sync may write; ``user_created`` rows belong to people.
SYNCED_CATEGORIES = frozenset({"nhs_dd", "rcpch", "external_api", "snomed", "reference"})
# Source types of rows a sync made (the platform's own sync commands included); the rest are hand-made.
SYNCED_SOURCE_TYPES = frozenset({"scrape", "api", "snomed_db"})
PLATFORM_SOURCE_TYPES = frozenset({"api", "manual", "imported", "scrape", "snomed_db"})


class StoreMismatch(Exception):
    """The configured dataset table cannot hold what datasync writes; the message says what is missing."""


@dataclass(frozen=True)
class ProfileLimits:
    """What the profile's dataset table accepts; the catalogue is checked against it before any fetch.

    ``None`` means the table sets no limit beyond the catalogue's own rules.
    """

    key_length: int
    url_length: int
    format_pattern_length: int
    page_id_length: int | None
    categories: frozenset[str] | None
    source_types: frozenset[str] | None


DATASYNC_LIMITS = ProfileLimits(255, 2000, 100, None, None, None)
CHECKTICK_LIMITS = ProfileLimits(100, 200, 50, 100, SYNCED_CATEGORIES, PLATFORM_SOURCE_TYPES)


@dataclass(frozen=True)
class StoredDataset:
    """A dataset row as a sync sees it, whichever table holds it.

    ``options`` are in source order when datasync knows it (``content_hash`` is then set). A row
    datasync has no matching history for (adopted from the platform's own sync, or edited outside
    datasync) has ``content_hash`` None and its options in the order the database returned. Rows
    listed by ``DatasetTable.synced`` are read without history (``has_baseline`` False).
    """

    id: int
    key: str
    version: int
    options: dict[str, str]
    content_hash: str | None
    retired_codes: list[str]
    default_codes: list[str]
    has_baseline: bool
    row: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.row["name"])

    @property
    def category(self) -> str:
        return str(self.row["category"])

    @property
    def updated_at(self) -> datetime:
        value: datetime = self.row["updated_at"]
        return value

    @property
    def last_scraped(self) -> datetime | None:
        value: datetime | None = self.row["last_scraped"]
        return value

    @property
    def last_synced_at(self) -> datetime | None:
        value: datetime | None = self.row["last_synced_at"]
        return value

    @property
    def owned_by_people(self) -> bool:
        """Rows people made or customised; a sync must never write to them."""
        return bool(self.row["is_custom"]) or self.row["category"] == "user_created"

    @property
    def made_by_a_sync(self) -> bool:
        """A row some sync made (datasync's or the platform's own), so datasync may adopt it."""
        return self.row["category"] in SYNCED_CATEGORIES and self.row["source_type"] in SYNCED_SOURCE_TYPES

    @property
    def order_known(self) -> bool:
        return self.content_hash is not None

    def diff_to(self, options: dict[str, str]) -> OptionsDiff:
        """What ``options`` would change; no reorder is claimed while the stored order is unknown."""
        return OptionsDiff.between(self.options, options, compare_order=self.order_known)


@dataclass(frozen=True)
class DatasetSummary:
    """What ``status`` shows of a stored dataset: its facts and how many codes it holds, never the codes."""

    key: str
    name: str
    category: str
    version: int
    options_count: int
    last_scraped: datetime | None
    last_synced_at: datetime | None


@dataclass(frozen=True)
class DatasetTable:
    """One profile's dataset table and the few facts about it the shared code needs."""

    profile: str
    table: Table
    limits: ProfileLimits
    lists_on_row: bool  # datasync's table keeps content hash, retired and default codes on the row

    @property
    def is_platform(self) -> bool:
        return self.profile == "checktick"

    @property
    def display_name(self) -> str:
        return f"{self.table.schema}.{self.table.name}" if self.table.schema else self.table.name

    def load(self, session: Session, key: str, *, for_update: bool = False) -> StoredDataset | None:
        found = session.connection().execute(_loading(self, for_update), {"key": key}).first()
        return self._stored(found) if found else None

    def synced(self, session: Session, keys: Collection[str] | None = None) -> list[StoredDataset]:
        """Every row that is not people's own (or those of ``keys``), as status reads them: without history,
        so it stays one cheap query."""
        query = select(self.table).where(self._is_synced())
        if keys is not None:
            query = query.where(self.table.c.key.in_(keys))
        return [self._stored(found) for found in session.execute(query)]

    def summaries(self, session: Session, keys: Collection[str]) -> list[DatasetSummary]:
        """The synced rows of ``keys`` without their lists: the database counts the codes, so a status of
        thousands of datasets never holds their options in memory."""
        c = self.table.c
        count = self.code_count(session.get_bind().dialect.name).label("options_count")
        query = select(c.key, c.name, c.category, c.version, count, c.last_scraped, c.last_synced_at)
        found = session.execute(query.where(self._is_synced(), c.key.in_(keys)))
        return [DatasetSummary(*row) for row in found]

    def synced_keys(self, session: Session, after: str | None, limit: int) -> list[str]:
        """One page of synced rows' keys from after ``after``, in code-point order (Python's ``sorted``): a
        keyset page, so reading every key holds neither a long transaction nor the whole list."""
        key: ColumnElement[str] = self.table.c.key
        if session.get_bind().dialect.name == "postgresql":  # SQLite compares bytes already
            key = key.collate("C")
        query = select(self.table.c.key).where(self._is_synced()).order_by(key).limit(limit)
        if after is not None:
            query = query.where(key > after)
        return list(session.scalars(query))

    def longest(self, session: Session) -> tuple[int, int]:
        """The longest key and category among synced rows (0 for none), to size a streamed table."""
        c = self.table.c
        query = select(func.max(func.length(c.key)), func.max(func.length(c.category))).where(self._is_synced())
        widest = session.execute(query).one()
        return int(widest[0] or 0), int(widest[1] or 0)

    def _is_synced(self) -> ColumnElement[bool]:
        return and_(self.table.c.is_custom.is_(False), self.table.c.category != "user_created")

    def code_count(self, dialect: str) -> ColumnElement[int]:
        """How many codes the stored list holds, as the stored dataset reads it: anything but a
        ``{code: label}`` object counts 0 (``_options``)."""
        options: ColumnElement[Any] = self.table.c.options
        if dialect == "postgresql":  # datasync's column is json, the platform's jsonb: count through json
            options = cast(options, JSON)
            kind, keys = func.json_typeof(options), func.json_object_keys(options)
        else:
            kind, keys = func.json_type(options), func.json_each(options)
        return case((kind == "object", select(func.count()).select_from(keys).scalar_subquery()), else_=0)

    def insert(self, session: Session, values: Mapping[str, Any]) -> None:
        session.connection().execute(_inserting(self), dict(values))  # compiled once per set of columns

    def update(self, session: Session, row_id: int, values: Mapping[str, Any]) -> None:
        if values:
            session.connection().execute(_updating(self), {**values, "row_id": row_id})

    def check(self, connection: Connection) -> None:
        """Refuse a table that lacks a column datasync uses, types it cannot write, or needs values it never gives."""
        inspector = inspect(connection)
        if not inspector.has_table(self.table.name, schema=self.table.schema):
            raise StoreMismatch(f"no table {self.display_name} in the store{self._setting_hint()}")
        actual = {c["name"]: c for c in inspector.get_columns(self.table.name, schema=self.table.schema)}
        problems = [p for column in self.table.columns if (p := _column_problem(column, actual.get(column.name)))]
        problems += [
            f"{name} is NOT NULL without a default and datasync does not write it"
            for name, column in actual.items()
            if name not in self.table.c and not column["nullable"] and _no_default(column)
        ]
        if problems:
            raise StoreMismatch(f"the dataset table {self.display_name} does not fit datasync: {'; '.join(problems)}")

    def _setting_hint(self) -> str:
        if self.is_platform:
            return " (check DATASYNC_PLATFORM_TABLE and DATASYNC_PLATFORM_SCHEMA)"
        return " (run `datasync migrate`; a store migrated with DATASYNC_STORE_PROFILE=checktick has none)"

    def _select(self) -> Select[Any]:
        history = DatasetVersion.__table__
        matching_version = and_(history.c.dataset_key == self.table.c.key, history.c.version == self.table.c.version)
        return select(
            self.table,
            history.c.id.label("history_id"),
            history.c.options.label("history_options"),
            history.c.content_hash.label("history_hash"),
            history.c.retired_codes.label("history_retired"),
            history.c.default_codes.label("history_defaults"),
        ).select_from(self.table.outerjoin(history, matching_version))

    def _stored(self, found: Row[Any]) -> StoredDataset:
        row = found._mapping
        stored = {column.name: row[column.name] for column in self.table.columns}
        has_baseline = row.get("history_id") is not None
        if self.lists_on_row:
            lists = (
                _options(row["options"]),
                row["content_hash"],
                list(row["retired_codes"]),
                list(row["default_codes"]),
            )
        elif has_baseline and dict(row["history_options"]) == _options(row["options"]):
            # The platform's jsonb lost the source order; the version history kept it.
            lists = (
                dict(row["history_options"]),
                row["history_hash"],
                list(row["history_retired"]),
                list(row["history_defaults"]),
            )
        else:
            lists = (_options(row["options"]), None, [], [])
        options, content_hash, retired, defaults = lists
        return StoredDataset(
            id=int(row["id"]),
            key=str(row["key"]),
            version=int(row["version"]),
            options=options,
            content_hash=content_hash,
            retired_codes=retired,
            default_codes=defaults,
            has_baseline=has_baseline,
            row=stored,
        )


# A sync's statements on the dataset table, built once per table with their values bound at execution: a
# statement built anew costs its construction and SQLAlchemy cache key every time (~0.1 ms for the load),
# in the end transaction, which on SQLite holds the write lock the whole time.


@functools.cache
def _loading(table: DatasetTable, for_update: bool) -> Select[Any]:
    query = table._select().where(table.table.c.key == bindparam("key"))
    return query.with_for_update(of=table.table) if for_update else query


@functools.cache
def _inserting(table: DatasetTable) -> Insert:
    return insert(table.table)


@functools.cache
def _updating(table: DatasetTable) -> Update:
    return update(table.table).where(table.table.c.id == bindparam("row_id"))


def _options(value: Any) -> dict[str, str]:
    """The stored list; anything but a ``{code: label}`` object (the platform's default is ``[]``) reads as empty."""
    return dict(value) if isinstance(value, dict) else {}


def _no_default(column: Mapping[str, Any]) -> bool:
    return column.get("default") is None and not column.get("identity") and not column.get("computed")


def _column_problem(expected: Column[Any], actual: Mapping[str, Any] | None) -> str | None:
    """Why the table's column cannot take what datasync writes into ``expected``, or None."""
    if actual is None:
        return f"missing column {expected.name}"
    want, have = expected.type, actual["type"]
    if isinstance(want, UTCDateTime):
        fits = isinstance(have, sqltypes.DateTime)
    elif isinstance(want, sqltypes.JSON):
        fits = isinstance(have, sqltypes.JSON) or (isinstance(have, sqltypes.String) and have.length is None)
    elif isinstance(want, sqltypes.String):
        fits = isinstance(have, sqltypes.String) and (
            have.length is None or (want.length is not None and have.length >= want.length)
        )
    elif isinstance(want, sqltypes.Boolean):
        fits = isinstance(have, sqltypes.Boolean)
    elif isinstance(want, NUMBERS):
        fits = isinstance(have, NUMBERS)
    else:
        fits = isinstance(have, sqltypes.Integer)
    if not fits:
        return f"{expected.name} is {have}, datasync writes {_describe(want)}"
    return None


def _describe(type_: Any) -> str:
    if isinstance(type_, UTCDateTime):
        return "a timestamp"
    if isinstance(type_, sqltypes.JSON):
        return "JSON"
    if isinstance(type_, sqltypes.String):
        return f"text of up to {type_.length} characters" if type_.length else "unbounded text"
    if isinstance(type_, NUMBERS):
        return "a number"
    return "a boolean" if isinstance(type_, sqltypes.Boolean) else "an integer"


def platform_table(name: str = "surveys_dataset", schema: str | None = None) -> Table:
    """The columns of the platform's ``DataSet`` table that datasync reads or writes.

    Lengths are the platform's (``reference/platform/``); columns datasync never touches
    (``parent_id``, ``created_by_id``, ``published_at``, ``nhs_dd_published_date``, the nullable
    ``snomed_*``) are left out and stay as the platform set them.
    """
    from sqlalchemy.dialects.postgresql import JSONB  # the platform table only: SQLite stores never load it

    json = JSON().with_variant(JSONB(), "postgresql")
    return Table(
        name,
        MetaData(),
        Column("id", BigInteger, primary_key=True),
        Column("key", String(100), nullable=False),
        Column("name", String(255), nullable=False),
        Column("description", Text, nullable=False),
        Column("category", String(50), nullable=False),
        Column("source_type", String(20), nullable=False),
        Column("reference_url", String(200), nullable=False),
        Column("nhs_dd_page_id", String(100), nullable=False),
        Column("is_custom", Boolean, nullable=False),
        Column("external_api_endpoint", String(255), nullable=False),
        Column("external_api_url", String(200), nullable=False),
        Column("sync_frequency_hours", Integer),
        Column("last_synced_at", UTCDateTime()),
        Column("last_scraped", UTCDateTime()),
        Column("is_global", Boolean, nullable=False),
        Column("options", json, nullable=False),
        Column("format_pattern", String(50), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("version", Integer, nullable=False),
        Column("tags", json, nullable=False),
        Column("snomed_refset_id", String(30), nullable=False),
        Column("snomed_query_type", String(20), nullable=False),
        Column("snomed_ecl", Text, nullable=False),
        Column("is_featured", Boolean, nullable=False),
        Column("is_active", Boolean, nullable=False),
        Column("organization_id", BigInteger),
        Column("team_id", BigInteger),
        schema=schema,
    )


DATASYNC_TABLE = DatasetTable("datasync", Base.metadata.tables["datasets"], DATASYNC_LIMITS, lists_on_row=True)


def dataset_table(profile: str = "datasync", name: str = "surveys_dataset", schema: str | None = None) -> DatasetTable:
    """The dataset table of a store profile (``name`` and ``schema`` apply to the platform's table)."""
    if profile == "datasync":
        return DATASYNC_TABLE
    if profile == "checktick":
        return DatasetTable(profile, platform_table(name, schema), CHECKTICK_LIMITS, lists_on_row=False)
    raise ValueError(f"unknown store profile {profile!r} (known: {', '.join(PROFILES)})")


def table_of(session: Session) -> DatasetTable:
    """The dataset table this session's store uses (datasync's own unless the factory said otherwise)."""
    table: DatasetTable = session.info.get("dataset_table", DATASYNC_TABLE)
    return table


def table_of_factory(sessions: sessionmaker[Session]) -> DatasetTable:
    """``table_of`` for the sessions a factory makes, for statements run on a Core connection of its store."""
    table: DatasetTable = sessions.kw.get("info", {}).get("dataset_table", DATASYNC_TABLE)
    return table

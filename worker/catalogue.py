"""The catalogue: which datasets exist and where each comes from (a TOML file of ``[[datasets]]``).

It is validated whole before anything is fetched, and every problem names the file, the entry and
the field at fault, so an operator never discovers a typo halfway through a sync.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from models.datasets import DATASYNC_LIMITS, ProfileLimits
from models.upsert import nhs_dd_page_id
from publisher.defaults import PublishDefaults
from scrapers import SOURCES
from scrapers.base import SourceParams
from scrapers.errors import url_credentials
from scrapers.http import host_of
from worker.problems import Problem, pointer

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")
WINDOW_PATTERN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
TOP_LEVEL_KEYS = frozenset({"datasets", "publish"})
# Fields whose values repeat across a catalogue's entries: each distinct value is kept once (``_Shared``).
SHARED_FIELDS = ("description", "category", "source", "tags", "frequency_hours", "format_pattern", "sync_window")
T = TypeVar("T")


class CatalogueError(Exception):
    """The catalogue cannot be used; the message says where and why.

    ``errors`` holds the same problems located by JSON pointers into the file (``/datasets/2/url``),
    for ``--json`` output.
    """

    def __init__(self, message: str, errors: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.errors = tuple(errors)


# A list re-checked less than once a year is not being kept current; beyond that, date arithmetic
# overflows (``inf``, ``1e12``) and one bad entry used to stop every dataset's scheduling.
MAX_FREQUENCY_HOURS = 8760


class _EntryFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    key: str = Field(max_length=255)
    name: str = Field(min_length=1, max_length=255)
    description: str = ""
    category: Literal["nhs_dd", "rcpch", "external_api", "reference", "snomed"]
    source: str
    url: str
    tags: tuple[str, ...] = ()
    frequency_hours: float = Field(default=24.0, gt=0, le=MAX_FREQUENCY_HOURS)
    format_pattern: str = "code - description"
    allowed_hosts: tuple[str, ...] = ()
    enabled: bool = True
    sync_window: str | None = None
    organization_id: int | None = Field(None, ge=1)
    team_id: int | None = Field(None, ge=1)
    stale_after_hours: float | None = Field(None, gt=0, le=10 * 8760)

    @model_validator(mode="after")
    def _one_owner(self) -> _EntryFields:
        """The platform's constraints: an organisation or a team, not both; NHS DD lists stay global."""
        if self.organization_id is not None and self.team_id is not None:
            raise ValueError("give organization_id or team_id, not both")
        if self.category == "nhs_dd" and (self.organization_id is not None or self.team_id is not None):
            raise ValueError("an nhs_dd list is global: it cannot have an organization_id or team_id")
        return self

    @field_validator("sync_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None and parse_window(value) is None:
            raise ValueError('must be "HH:MM-HH:MM" in UTC, e.g. "01:00-05:00" (may wrap past midnight)')
        return value

    @field_validator("key")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not KEY_PATTERN.match(value):
            raise ValueError("must be a lower-case slug: letters, digits and underscores")
        return value

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in SOURCES:
            raise ValueError(f"unknown source kind {value!r} (known: {', '.join(sorted(SOURCES))})")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an absolute http:// or https:// URL")
        credential = url_credentials(value)
        if credential:
            raise ValueError(
                f"must not carry credentials ({credential}): the URL is stored where the platform reads it; "
                "put the secret in an environment variable and name it with the source's auth keys "
                "(api_key_env, api_key_header)"
            )
        return value


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    key: str
    name: str
    description: str
    category: str
    source: str
    url: str
    tags: tuple[str, ...]
    frequency_hours: float
    format_pattern: str
    allowed_hosts: frozenset[str]
    enabled: bool
    sync_window: str | None
    params: SourceParams
    organization_id: int | None = None
    team_id: int | None = None
    stale_after_hours: float | None = None

    @property
    def source_type(self) -> str:
        return SOURCES[self.source].source_type

    def in_window(self, now: datetime) -> bool:
        """Whether scheduled syncs may run now (always, unless the entry sets ``sync_window``)."""
        window = parse_window(self.sync_window) if self.sync_window else None
        if window is None:
            return True
        start, end, moment = *window, now.astimezone(UTC).time()
        return start <= moment < end if start < end else moment >= start or moment < end

    @property
    def stale_after(self) -> float:
        """Hours without a success before the dataset counts as stale (default: twice its frequency)."""
        return self.stale_after_hours or 2 * self.frequency_hours

    @property
    def stamp_field(self) -> str:
        """Which platform stamp a successful sync moves: scraped pages vs. API pulls."""
        return "last_scraped" if self.source_type == "scrape" else "last_synced_at"


@dataclass(frozen=True)
class Catalogue:
    path: Path
    entries: tuple[CatalogueEntry, ...]
    publish: PublishDefaults = PublishDefaults()
    _index: dict[str, CatalogueEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every task looks its entry up: building the index once keeps that O(1) for 10,000 entries.
        object.__setattr__(self, "_index", {entry.key: entry for entry in self.entries})

    def by_key(self) -> dict[str, CatalogueEntry]:
        """The entries by key; shared by every caller, so read it, never change it."""
        return self._index

    def select(self, keys: list[str] | None = None, category: str | None = None) -> list[CatalogueEntry]:
        """Entries by key and/or category; an unknown key is an error, not an empty selection."""
        index = self.by_key()
        unknown = [key for key in keys or [] if key not in index]
        if unknown:
            raise CatalogueError(
                f"{self.path}: no dataset with key {', '.join(map(repr, unknown))}",
                [Problem("unknown_dataset", f"no dataset with key {key!r}", pointer("datasets")) for key in unknown],
            )
        chosen = [index[key] for key in keys] if keys else [e for e in self.entries if e.enabled]
        return [entry for entry in chosen if category is None or entry.category == category]


def parse_window(text: str) -> tuple[time, time] | None:
    match = WINDOW_PATTERN.match(text.strip())
    if not match:
        return None
    try:
        start, end = (time(int(h), int(m)) for h, m in (match.group(1, 2), match.group(3, 4)))
    except ValueError:
        return None
    return (start, end) if start != end else None


def load_catalogue(path: Path, limits: ProfileLimits = DATASYNC_LIMITS) -> Catalogue:
    """The catalogue at ``path``, checked whole, including against the store profile's ``limits``."""
    document, raw_entries = _read(path)
    shared = _Shared()
    entries = [_entry(path, position, raw, shared) for position, raw in enumerate(_consumed(raw_entries), start=1)]
    _check_unique(path, entries)
    for position, entry in enumerate(entries, start=1):
        problem = _beyond_limits(entry, limits)
        if problem:
            name, why = problem
            raise CatalogueError(
                f"{path}: entry {position} (key {entry.key!r}): field {name!r}: {why}",
                [Problem("limit", why, pointer("datasets", position - 1, name))],
            )
    return Catalogue(path, tuple(entries), _publish_defaults(path, document.get("publish", {})))


def catalogue_problems(path: Path, limits: ProfileLimits = DATASYNC_LIMITS) -> list[CatalogueError]:
    """Every entry's problem, each located (``load_catalogue`` stops at the first); then the file's."""
    try:
        _, raw_entries = _read(path)
    except CatalogueError as exc:
        return [exc]
    problems = []
    for position, raw in enumerate(raw_entries, start=1):
        try:
            _entry(path, position, raw, _Shared())
        except CatalogueError as exc:
            problems.append(exc)
    if problems:
        return problems
    try:
        load_catalogue(path, limits)
    except CatalogueError as exc:
        return [exc]
    return []


def _read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The TOML document and its ``[[datasets]]`` tables, or the located reason they are unusable."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CatalogueError(f"{path}: catalogue file not found", [Problem("not_found", "file not found")]) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{path}: not valid TOML: {exc}", [Problem("toml", str(exc))]) from exc
    raw_entries = document.get("datasets")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise CatalogueError(
            f"{path}: no [[datasets]] entries", [Problem("missing", "no [[datasets]] entries", pointer("datasets"))]
        )
    unknown = sorted(set(document) - TOP_LEVEL_KEYS)
    if unknown:
        raise CatalogueError(
            f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))} (expected [[datasets]])",
            [Problem("unknown_key", f"unknown top-level key {name!r}", pointer(name)) for name in unknown],
        )
    for position, raw in enumerate(raw_entries, start=1):
        if not isinstance(raw, dict):
            raise CatalogueError(
                f"{path}: entry {position}: each dataset must be a [[datasets]] table",
                [Problem("type", "each dataset must be a [[datasets]] table", pointer("datasets", position - 1))],
            )
    return document, raw_entries


def _publish_defaults(path: Path, raw: Any) -> PublishDefaults:
    """The ``[publish]`` table (optional): what every record sent to the national catalogue shares."""
    if not isinstance(raw, dict):
        raise CatalogueError(
            f"{path}: [publish] must be a table", [Problem("type", "[publish] must be a table", pointer("publish"))]
        )
    try:
        return PublishDefaults(**raw)
    except ValidationError as exc:
        raise CatalogueError(f"{path}: [publish]: {_describe(exc)}", _problems(exc, "publish")) from exc


class _Shared:
    """One object per distinct value while a catalogue loads: thousands of entries repeat a handful of
    categories, hosts, tags and source parameters, and a status over a large catalogue holds them all."""

    def __init__(self) -> None:
        self._seen: dict[Any, Any] = {}

    def __call__(self, value: T) -> T:
        try:
            return self._seen.setdefault(value, value)  # type: ignore[no-any-return]
        except TypeError:  # unhashable (a parameter holding a list): kept as it is
            return value


def _consumed(items: list[T]) -> Iterator[T]:
    """The items in order, each dropped from ``items`` once taken: a large file's parsed tables are freed
    while its entries are built, instead of both being held at the peak."""
    items.reverse()
    while items:
        yield items.pop()


def _entry(path: Path, position: int, raw: dict[str, Any], shared: _Shared) -> CatalogueEntry:
    where = f"{path}: entry {position}" + (f" (key {raw['key']!r})" if isinstance(raw.get("key"), str) else "")
    common_names = set(_EntryFields.model_fields)
    common = {name: value for name, value in raw.items() if name in common_names}
    try:
        fields = _EntryFields(**common)
    except ValidationError as exc:
        raise CatalogueError(f"{where}: {_describe(exc)}", _problems(exc, "datasets", position - 1)) from exc
    source = SOURCES[fields.source]
    extra = {name: value for name, value in raw.items() if name not in common_names}
    try:
        params = source.params_model(**extra)
    except ValidationError as exc:
        raise CatalogueError(
            f"{where}: {_describe(exc)} (for source {fields.source!r})", _problems(exc, "datasets", position - 1)
        ) from exc
    if problem := source.check_url(fields.url):
        raise CatalogueError(
            f"{where}: field 'url': {problem} (for source {fields.source!r})",
            [Problem("value", problem, pointer("datasets", position - 1, "url"))],
        )
    values = fields.model_dump(exclude={"allowed_hosts"})
    return CatalogueEntry(
        params=shared(params),
        allowed_hosts=shared(frozenset(h.lower() for h in fields.allowed_hosts) | {host_of(fields.url)}),
        **values | {name: shared(values[name]) for name in SHARED_FIELDS},
    )


def _beyond_limits(entry: CatalogueEntry, limits: ProfileLimits) -> tuple[str, str] | None:
    """What in ``entry`` the store profile's dataset table cannot hold: (field, why), or None."""
    lengths = (
        ("key", entry.key, limits.key_length),
        ("url", entry.url, limits.url_length),
        ("format_pattern", entry.format_pattern, limits.format_pattern_length),
    )
    for name, value, limit in lengths:
        if len(value) > limit:
            return name, f"{len(value)} characters, the store's dataset table takes at most {limit}"
    page_id = nhs_dd_page_id(entry.category, entry.url)
    if limits.page_id_length is not None and len(page_id) > limits.page_id_length:
        return "url", f"its page name is {len(page_id)} characters, the store takes at most {limits.page_id_length}"
    if limits.categories is not None and entry.category not in limits.categories:
        return "category", f"{entry.category!r} is not a category the store accepts"
    if limits.source_types is not None and entry.source_type not in limits.source_types:
        accepted = ", ".join(sorted(limits.source_types))
        return "source", f"source type {entry.source_type!r} is not one the store accepts ({accepted})"
    return None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(entry)"
        problems.append(f"field {field!r}: {_message(error)}")
    return "; ".join(problems)


def _message(error: ErrorDetails) -> str:
    return "unknown key" if error["type"] == "extra_forbidden" else error["msg"]


def _problems(exc: ValidationError, *prefix: str | int) -> list[Problem]:
    """The same problems as ``_describe``, each located by a JSON pointer into the catalogue file."""
    return [
        Problem(
            "unknown_key" if error["type"] == "extra_forbidden" else error["type"],
            _message(error).removeprefix("Value error, "),
            pointer(*prefix, *error["loc"]),
        )
        for error in exc.errors()
    ]


def _check_unique(path: Path, entries: list[CatalogueEntry]) -> None:
    seen: set[str] = set()
    for position, entry in enumerate(entries, start=1):
        if entry.key in seen:
            raise CatalogueError(
                f"{path}: entry {position}: field 'key': duplicate key {entry.key!r}",
                [Problem("duplicate", f"duplicate key {entry.key!r}", pointer("datasets", position - 1, "key"))],
            )
        seen.add(entry.key)

"""The catalogue: which datasets exist and where each comes from (a TOML file of ``[[datasets]]``).

It is validated whole before anything is fetched, and every problem names the file, the entry and
the field at fault, so an operator never discovers a typo halfway through a sync.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scrapers import SOURCES
from scrapers.base import SourceParams
from scrapers.http import host_of

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")
WINDOW_PATTERN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class CatalogueError(Exception):
    """The catalogue cannot be used; the message says where and why."""


class _EntryFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(max_length=255)
    name: str = Field(min_length=1, max_length=255)
    description: str = ""
    category: Literal["nhs_dd", "rcpch", "external_api", "reference"]
    source: str
    url: str
    tags: tuple[str, ...] = ()
    frequency_hours: float = Field(24.0, gt=0)
    format_pattern: str = "code - description"
    allowed_hosts: tuple[str, ...] = ()
    enabled: bool = True
    sync_window: str | None = None
    organization_id: int | None = None

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
        return value


@dataclass(frozen=True)
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
    def stamp_field(self) -> str:
        """Which platform stamp a successful sync moves: scraped pages vs. API pulls."""
        return "last_scraped" if self.source_type == "scrape" else "last_synced_at"


@dataclass(frozen=True)
class Catalogue:
    path: Path
    entries: tuple[CatalogueEntry, ...]

    def by_key(self) -> dict[str, CatalogueEntry]:
        return {entry.key: entry for entry in self.entries}

    def select(self, keys: list[str] | None = None, category: str | None = None) -> list[CatalogueEntry]:
        """Entries by key and/or category; an unknown key is an error, not an empty selection."""
        index = self.by_key()
        unknown = [key for key in keys or [] if key not in index]
        if unknown:
            raise CatalogueError(f"{self.path}: no dataset with key {', '.join(map(repr, unknown))}")
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


def load_catalogue(path: Path) -> Catalogue:
    entries = [_entry(path, position, raw) for position, raw in enumerate(_raw_entries(path), start=1)]
    _check_unique(path, entries)
    return Catalogue(path, tuple(entries))


def catalogue_problems(path: Path) -> list[str]:
    """Every problem in the file, each located (``load_catalogue`` stops at the first)."""
    try:
        raw_entries = _raw_entries(path)
    except CatalogueError as exc:
        return [str(exc)]
    problems, entries = [], []
    for position, raw in enumerate(raw_entries, start=1):
        try:
            entries.append(_entry(path, position, raw))
        except CatalogueError as exc:
            problems.append(str(exc))
    try:
        _check_unique(path, entries)
    except CatalogueError as exc:
        problems.append(str(exc))
    return problems


def _raw_entries(path: Path) -> list[dict[str, Any]]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CatalogueError(f"{path}: catalogue file not found") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{path}: not valid TOML: {exc}") from exc
    raw_entries = document.get("datasets")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise CatalogueError(f"{path}: no [[datasets]] entries")
    unknown = sorted(set(document) - {"datasets"})
    if unknown:
        raise CatalogueError(
            f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))} (expected [[datasets]])"
        )
    for position, raw in enumerate(raw_entries, start=1):
        if not isinstance(raw, dict):
            raise CatalogueError(f"{path}: entry {position}: each dataset must be a [[datasets]] table")
    return raw_entries


def _entry(path: Path, position: int, raw: dict[str, Any]) -> CatalogueEntry:
    where = f"{path}: entry {position}" + (f" (key {raw['key']!r})" if isinstance(raw.get("key"), str) else "")
    common_names = set(_EntryFields.model_fields)
    common = {name: value for name, value in raw.items() if name in common_names}
    try:
        fields = _EntryFields(**common)
    except ValidationError as exc:
        raise CatalogueError(f"{where}: {_describe(exc)}") from exc
    source = SOURCES[fields.source]
    extra = {name: value for name, value in raw.items() if name not in common_names}
    try:
        params = source.params_model(**extra)
    except ValidationError as exc:
        raise CatalogueError(f"{where}: {_describe(exc)} (for source {fields.source!r})") from exc
    if problem := source.check_url(fields.url):
        raise CatalogueError(f"{where}: field 'url': {problem} (for source {fields.source!r})")
    return CatalogueEntry(
        params=params,
        allowed_hosts=frozenset(h.lower() for h in fields.allowed_hosts) | {host_of(fields.url)},
        **fields.model_dump(exclude={"allowed_hosts"}),
    )


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(entry)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"field {field!r}: {message}")
    return "; ".join(problems)


def _check_unique(path: Path, entries: list[CatalogueEntry]) -> None:
    seen: set[str] = set()
    for position, entry in enumerate(entries, start=1):
        if entry.key in seen:
            raise CatalogueError(f"{path}: entry {position}: field 'key': duplicate key {entry.key!r}")
        seen.add(entry.key)

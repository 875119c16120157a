"""Find NHS Data Dictionary code lists the catalogue does not have yet, as ready-to-paste entries.

Reads the data-element index, follows each element link the catalogue lacks, and keeps the pages
the ``nhs_dd`` source can read (a code table with rows). Every request goes through the same
HTTP client and per-host throttle as a sync, one page at a time, so discovery is as polite as a sync.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup

from scrapers.base import decode_text
from scrapers.errors import PermanentError, SyncError
from scrapers.http import HttpClient, host_of
from scrapers.nhs_dd import parse_page
from worker.catalogue import Catalogue

ELEMENT_PATH = re.compile(r"/data_elements/([a-z0-9_-]+)\.html$")


@dataclass(frozen=True)
class Candidate:
    key: str
    name: str
    description: str
    category: str
    source: str
    url: str
    tags: tuple[str, ...]
    frequency_hours: int
    codes: int

    def to_toml(self) -> str:
        tags = ", ".join(f'"{tag}"' for tag in self.tags)
        return "\n".join(
            [
                f"# {self.codes} codes found",
                "[[datasets]]",
                f'key = "{self.key}"',
                f"name = {_toml_string(self.name)}",
                f"description = {_toml_string(self.description)}",
                f'category = "{self.category}"',
                f'source = "{self.source}"',
                f'url = "{self.url}"',
                f"tags = [{tags}]",
                f"frequency_hours = {self.frequency_hours}",
            ]
        )

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "tags": list(self.tags)}


@dataclass(frozen=True)
class Discovery:
    candidates: list[Candidate]
    skipped: list[str]  # one line per element page that could not be checked, and why
    unchecked: int  # new elements left for a later run by --limit


def discover_nhs_dd(
    catalogue: Catalogue,
    http: HttpClient,
    *,
    index_url: str,
    limit: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Discovery:
    """New elements with a code table; raises ``SyncError`` when the index cannot be read."""
    allowed = frozenset({host_of(index_url)})
    index = http.get(index_url, allowed_hosts=allowed, accept="text/html")
    links = list(element_links(decode_text(index), index_url))
    if not links:
        raise PermanentError("no_links", f"{index_url}: no links to data-element pages (has the index moved?)")
    known_urls = {entry.url for entry in catalogue.entries}
    new = [link for link in links if link[0] not in known_urls]
    chosen = new if limit is None else new[:limit]
    known_keys = {entry.key for entry in catalogue.entries}
    vocabulary = sorted({tag for entry in catalogue.entries for tag in entry.tags if tag != "NHS"})
    candidates, skipped = [], []
    for url, slug, name in chosen:
        progress(url)
        try:
            codes = len(parse_page(http.get(url, allowed_hosts=allowed, accept="text/html")))
        except SyncError as error:
            if error.kind not in ("no_code_table", "empty"):
                skipped.append(f"{url}: {error.message}")
            continue
        key = _free_key(slug, known_keys)
        known_keys.add(key)
        candidates.append(_candidate(key, name, url, codes, vocabulary))
    return Discovery(candidates, skipped, len(new) - len(chosen))


def element_links(html: str, index_url: str) -> Iterator[tuple[str, str, str]]:
    """(absolute URL, slug, element name) of each data-element link, first occurrence only."""
    seen: set[str] = set()
    for link in BeautifulSoup(html, "lxml").find_all("a", href=True):
        url = urljoin(index_url, str(link["href"])).split("#")[0]
        match = ELEMENT_PATH.search(urlsplit(url).path)
        if match and host_of(url) == host_of(index_url) and url not in seen:
            seen.add(url)
            yield url, match.group(1), " ".join(link.get_text().split()) or match.group(1)


def _candidate(key: str, name: str, url: str, codes: int, vocabulary: list[str]) -> Candidate:
    title = _title(name)
    words = set(re.findall(r"[a-z]+", title.lower()))
    tags = tuple(tag for tag in vocabulary if tag.lower() in words or tag.lower().rstrip("s") in words)
    return Candidate(
        key=key,
        name=title,
        description=f"NHS Data Dictionary - {title}",
        category="nhs_dd",
        source="nhs_dd",
        url=url,
        tags=(*tags, "NHS"),
        frequency_hours=168,
        codes=codes,
    )


def _title(name: str) -> str:
    """``ETHNIC CATEGORY`` (as the dictionary writes element names) → ``Ethnic Category``."""
    return " ".join(word if any(c.islower() for c in word) else word.capitalize() for word in name.split())


def _free_key(slug: str, taken: set[str]) -> str:
    key, suffix = slug.replace("-", "_").strip("_")[:200] or "element", 2
    candidate = key
    while candidate in taken:
        candidate, suffix = f"{key}_{suffix}", suffix + 1
    return candidate


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

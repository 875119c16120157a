"""NHS Data Dictionary data-element pages: the element's code tables become options.

The real pages are generated HTML whose section order, header wording and markup vary between
elements and releases, so tables are recognised by their header row (a code column followed by a
description-like column), never by position. Tables such as *Also Known As* or *Where Used* do
not match and are ignored. A page with no code table is an error, never an empty list.

Each code table's role comes from the heading of its section (or its own header): *National
Codes*, *Permitted National Codes* or *Default Codes*. An element that uses a subset of its
attribute's codes has a Permitted National Codes section and may show the full National Codes as
well; its list is then the permitted codes plus the default codes, never the union.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from bs4 import BeautifulSoup, Tag

from scrapers.base import MarkedText, Source, SourceEntry, decode_marked, html_charset
from scrapers.errors import PermanentError
from scrapers.http import Document
from scrapers.normalise import RawOption, html_to_text

LABEL_HEADER_WORDS = ("description", "definition", "meaning", "label", "value", "name")
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
HEADING_CLASSES = ("sectiontitle", "tabletitle")
STRUCK_TAGS = ("del", "s", "strike")


class NhsDataDictionary(Source):
    kind = "nhs_dd"
    source_type = "scrape"
    accept = "text/html,application/xhtml+xml"

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        return parse_page(documents[0])


class Role(enum.Enum):
    NATIONAL = "National Codes"
    PERMITTED = "Permitted National Codes"
    DEFAULT = "Default Codes"


def role_of(heading: str, first_header: str) -> Role:
    """A table's role from its section heading or its own first header cell (both lower-case)."""
    if "default" in first_header or "default" in heading:
        return Role.DEFAULT
    if "permitted" in first_header or "permitted" in heading:
        return Role.PERMITTED
    return Role.NATIONAL


def is_code_header(header: list[str]) -> bool:
    return len(header) >= 2 and "code" in header[0] and any(word in header[1] for word in LABEL_HEADER_WORDS)


def names_permitted_codes(heading: str) -> bool:
    return "permitted national code" in " ".join(heading.split())


class FoundTable(Protocol):
    """One ``<table>`` of a page, as a tree walker sees it; rows are read only for code tables."""

    def header(self) -> list[str] | None:
        """Header cell texts (lower-case) from the first row, or None for a table without rows."""

    def heading(self) -> str:
        """Text (lower-case) of the nearest heading before the table, or ``""``."""

    def rows(self) -> Iterator[tuple[str, str, bool]]:
        """``(code, label, retired)`` for every body row that has a code."""


class PageTree(Protocol):
    def tables(self) -> Iterator[FoundTable]: ...

    def headings(self) -> Iterator[str]:
        """Texts (lower-case) of every heading on the page."""


def parse_page(document: Document) -> list[RawOption]:
    decoded = decode_marked(document, html_charset(document))
    try:
        rows = options_from(SoupPage(decoded.text), document.url)
    except PermanentError as error:
        if decoded.marker:
            raise decoded.error("the page") from error
        raise
    if decoded.marker:
        raise _undecodable_row(decoded, rows)
    return rows


def options_from(page: PageTree, url: str) -> list[RawOption]:
    """The element's rows in page order: its permitted codes if it has any, else its national codes, then defaults."""
    seen: list[list[str] | None] = []
    found: list[tuple[Role, list[RawOption]]] = []
    for table in page.tables():
        header = table.header()
        seen.append(header)
        if header is None or not is_code_header(header):
            continue
        role = role_of(table.heading(), header[0])
        default = role is Role.DEFAULT
        found.append((role, [RawOption(code, label, retired, default) for code, label, retired in table.rows()]))
    if not found:
        raise _no_code_table(url, seen)
    roles = {role for role, _ in found}
    if Role.PERMITTED not in roles and any(names_permitted_codes(text) for text in page.headings()):
        raise PermanentError(
            "no_code_table", f"{url}: the page has a Permitted National Codes section but no code table in it"
        )
    restricted = Role.PERMITTED in roles
    rows = [row for role, table_rows in found if not (restricted and role is Role.NATIONAL) for row in table_rows]
    if restricted and not any(row for role, table_rows in found if role is Role.PERMITTED for row in table_rows):
        raise PermanentError("empty", f"{url}: the Permitted National Codes table has no code rows")
    if not rows:
        raise PermanentError("empty", f"{url}: {len(found)} code table(s) found, but no code rows in them")
    return rows


def _no_code_table(url: str, seen: list[list[str] | None]) -> PermanentError:
    headers = "; ".join(" | ".join(header or ["(no header)"]) for header in seen) or "no tables at all"
    return PermanentError(
        "no_code_table",
        f"{url}: no code table found (wanted a table headed Code | Description; "
        f"saw {len(seen)} table(s): {headers[:500]})",
    )


def _undecodable_row(decoded: MarkedText, rows: Iterable[RawOption]) -> PermanentError:
    marker = decoded.marker or ""
    for position, row in enumerate(rows, start=1):
        if marker in row.code or marker in row.label:
            code, label = (text.replace(marker, "\N{REPLACEMENT CHARACTER}") for text in (row.code, row.label))
            return decoded.error(f"row {position} (code {code!r}, label {label[:80]!r})")
    return decoded.error("the page (outside the code rows)")


@dataclass
class SoupPage:
    text: str

    def __post_init__(self) -> None:
        self.soup = BeautifulSoup(self.text, "lxml")

    def tables(self) -> Iterator[FoundTable]:
        return (SoupTable(table) for table in self.soup.find_all("table"))

    def headings(self) -> Iterator[str]:
        return (html_to_text(tag).lower() for tag in self.soup.find_all(_is_heading))


@dataclass
class SoupTable:
    table: Tag

    def header(self) -> list[str] | None:
        row = self.table.find("tr")
        if row is None:
            return None
        return [html_to_text(cell).lower() for cell in _cells(row)]

    def heading(self) -> str:
        heading = self.table.find_previous(_is_heading)
        return "" if heading is None else html_to_text(heading).lower()

    def rows(self) -> Iterator[tuple[str, str, bool]]:
        body_rows = [row for row in self.table.find_all("tr") if row.find_parent("table") is self.table]
        for row in body_rows[1:]:
            cells = _cells(row)
            if len(cells) < 2:
                continue  # a group heading spanning the table
            code, label = html_to_text(cells[0]), html_to_text(cells[1])
            if not code:
                continue  # a group heading written as an empty code cell
            yield code, label, _is_retired(row)


def _is_heading(tag: Tag) -> bool:
    classes = tag.get("class") or []
    return tag.name in HEADINGS or any(name in classes for name in HEADING_CLASSES)


def _cells(row: Tag) -> list[Tag]:
    return row.find_all(("td", "th"), recursive=False)


def _is_retired(row: Tag) -> bool:
    """Marked retired on the row or any cell in it: a 'retired' class, or struck-through text."""
    for tag in (row, *row.find_all(True)):
        if tag.name in STRUCK_TAGS or "line-through" in (tag.get("style") or ""):
            return True
        if any("retired" in css.lower() for css in tag.get("class") or []):
            return True
    return False

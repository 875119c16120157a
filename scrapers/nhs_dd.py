"""NHS Data Dictionary data-element pages: every code table on the page becomes options.

The real pages are generated HTML whose section order, header wording and markup vary between
elements and releases, so tables are recognised by their header row (a code column followed by a
description-like column), never by position. Tables such as *Also Known As* or *Where Used* do
not match and are ignored. A page with no code table is an error, never an empty list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from bs4 import BeautifulSoup, Tag

from scrapers.base import Source, SourceEntry, require_text
from scrapers.errors import PermanentError
from scrapers.http import Document
from scrapers.normalise import RawOption, html_to_text

LABEL_HEADER_WORDS = ("description", "definition", "meaning", "label", "value", "name")
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
STRUCK_TAGS = ("del", "s", "strike")


class NhsDataDictionary(Source):
    kind = "nhs_dd"
    source_type = "scrape"
    accept = "text/html,application/xhtml+xml"

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        return parse_page(documents[0])


def parse_page(document: Document) -> list[RawOption]:
    require_text(document)
    soup = BeautifulSoup(document.body, "lxml", from_encoding=document.charset)
    tables = soup.find_all("table")
    rows: list[RawOption] = []
    code_tables = 0
    for table in tables:
        header = _header_row(table)
        if header is None or not _is_code_header(header):
            continue
        code_tables += 1
        default = _is_default_table(table, header)
        rows.extend(_table_rows(table, header, default))
    if not code_tables:
        seen = "; ".join(" | ".join(_header_row(t) or ["(no header)"]) for t in tables) or "no tables at all"
        raise PermanentError(
            "no_code_table",
            f"{document.url}: no code table found (wanted a table headed Code | Description; "
            f"saw {len(tables)} table(s): {seen[:500]})",
        )
    if not rows:
        raise PermanentError("empty", f"{document.url}: {code_tables} code table(s) found, but no code rows in them")
    return rows


def _header_row(table: Tag) -> list[str] | None:
    """Header cell texts (lower-case) from ``<thead>`` or, failing that, the first row."""
    row = table.find("tr")
    if row is None:
        return None
    return [html_to_text(cell).lower() for cell in _cells(row)]


def _is_code_header(header: list[str]) -> bool:
    return len(header) >= 2 and "code" in header[0] and any(word in header[1] for word in LABEL_HEADER_WORDS)


def _is_default_table(table: Tag, header: list[str]) -> bool:
    if "default" in header[0]:
        return True
    heading = table.find_previous(_is_heading)
    return heading is not None and "default" in html_to_text(heading).lower()


def _is_heading(tag: Tag) -> bool:
    classes: Iterable[str] = tag.get("class") or []
    return tag.name in HEADINGS or "sectiontitle" in classes or "tabletitle" in classes


def _table_rows(table: Tag, header: list[str], default: bool) -> Iterator[RawOption]:
    body_rows = [row for row in table.find_all("tr") if row.find_parent("table") is table]
    for row in body_rows[1:]:
        cells = _cells(row)
        if len(cells) < 2:
            continue  # a group heading spanning the table
        code, label = html_to_text(cells[0]), html_to_text(cells[1])
        if not code:
            continue  # a group heading written as an empty code cell
        yield RawOption(code=code, label=label, retired=_is_retired(row), default=default)


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

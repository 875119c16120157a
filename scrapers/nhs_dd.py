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

import codecs
import enum
import re
from collections.abc import Iterable, Iterator
from typing import Protocol

from lxml import etree
from lxml.etree import _Element

from scrapers.base import MarkedText, Source, SourceEntry, decode_marked, html_charset, require_text
from scrapers.errors import PermanentError, TransientError
from scrapers.http import Document
from scrapers.normalise import BLOCK_TAGS, INVISIBLE_TAGS, RawOption, collapse_whitespace

LABEL_HEADER_WORDS = ("description", "definition", "meaning", "label", "value", "name")
HEADINGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))
HEADING_CLASSES = ("sectiontitle", "tabletitle")
STRUCK_TAGS = ("del", "s", "strike")
TABLE_START = re.compile(rb"<table[\s>]")


class NhsDataDictionary(Source):
    kind = "nhs_dd"
    source_type = "scrape"
    accept = "text/html,application/xhtml+xml"

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        require_text(documents[0])
        require_whole_page(documents[0])
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
        rows = options_from(LxmlPage(_utf8(document, decoded), document.url), document.url)
    except PermanentError as error:
        if decoded.marker:
            raise decoded.error("the page") from error
        raise
    if decoded.marker:
        raise _undecodable_row(decoded, rows)
    return rows


def require_whole_page(document: Document) -> None:
    """Refuse a page that stops early even though its transfer looked complete.

    The HTML parser closes whatever is open at the end, so a page cut mid-table reads as a whole
    page with fewer rows. Every real page closes each table it opens and ends with ``</html>``.
    """
    markup = document.body.lower()
    opened, closed = len(TABLE_START.findall(markup)), markup.count(b"</table")
    if opened > closed:
        raise TransientError(
            "incomplete", f"{document.url}: the page ends early: {opened} table(s) opened, {closed} closed"
        )
    if b"</html" not in markup:
        raise TransientError("incomplete", f"{document.url}: the page ends early: no closing </html> tag")


def _utf8(document: Document, decoded: MarkedText) -> bytes:
    """The page as UTF-8 for lxml: the body itself when it already is (the usual case), else re-encoded."""
    if decoded.encoding == "utf-8" and not decoded.marker:
        return document.body.removeprefix(codecs.BOM_UTF8)
    return decoded.text.encode("utf-8")


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


def _body_dropped(url: str, errors: etree._ListErrorLog) -> PermanentError:
    """libxml2 drops a page's whole ``<body>`` where a browser reads on (e.g. ``<html <br/>lang=...>``
    closes ``<html>`` at once): refuse the page rather than report it as having no code table."""
    first = next(iter(errors), None)
    where = f" (line {first.line}: {first.message})" if first is not None else ""
    return PermanentError("broken_markup", f"{url}: the page's markup is broken: its <body> could not be read{where}")


class LxmlPage:
    """A page parsed once into lxml's C tree; one pass in document order finds tables and their headings."""

    def __init__(self, html: bytes, url: str) -> None:
        parser = etree.HTMLParser(huge_tree=True, no_network=True, encoding="utf-8")
        root = etree.fromstring(html, parser)
        too_deep = next((e for e in parser.error_log if e.type_name == "ERR_RESOURCE_LIMIT"), None)
        if too_deep is not None:
            raise PermanentError(
                "too_deep", f"{url}: the HTML is nested too deeply to read (line {too_deep.line}: {too_deep.message})"
            )
        if (root is None or root.find("body") is None) and b"<body" in html.lower():
            raise _body_dropped(url, parser.error_log)
        self._tables: list[LxmlTable] = []
        self._headings: list[_Element] = []
        for element in () if root is None else root.iter(etree.Element):
            tag = element.tag
            if tag == "table":
                self._tables.append(LxmlTable(element, self._headings[-1] if self._headings else None))
            if tag in HEADINGS:
                self._headings.append(element)
            elif (classes := element.get("class")) and "title" in classes and _is_heading_class(classes):
                self._headings.append(element)  # "title" first: a cheap test most elements fail

    def tables(self) -> Iterator[FoundTable]:
        return iter(self._tables)

    def headings(self) -> Iterator[str]:
        return (element_text(heading).lower() for heading in self._headings)


class LxmlTable:
    def __init__(self, table: _Element, heading: _Element | None) -> None:
        self.table = table
        self._heading = heading

    def header(self) -> list[str] | None:
        row = next(self.table.iter("tr"), None)
        if row is None:
            return None
        return [element_text(cell).lower() for cell in _cells(row)]

    def heading(self) -> str:
        return "" if self._heading is None else element_text(self._heading).lower()

    def rows(self) -> Iterator[tuple[str, str, bool]]:
        body_rows = [row for row in self.table.iter("tr") if next(row.iterancestors("table")) is self.table]
        for row in body_rows[1:]:
            cells = _cells(row)
            if len(cells) < 2:
                continue  # a group heading spanning the table
            code, label = element_text(cells[0]), element_text(cells[1])
            if not code:
                continue  # a group heading written as an empty code cell
            yield code, label, _is_retired(row)


def element_text(element: _Element) -> str:
    """What a browser shows for an element, as one clean line (the rules of ``normalise.html_to_text``).

    Walks the tree with an explicit stack, so markup nested thousands deep costs no recursion.
    """
    if not len(element) and isinstance(element.tag, str) and element.tag not in INVISIBLE_TAGS:
        return collapse_whitespace(element.text or "")  # most cells: text and no markup
    pieces: list[str] = []
    stack: list[_Element | str] = [element]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            pieces.append(node)
            continue
        if node is not element and node.tail:
            stack.append(node.tail)
        tag = node.tag
        if not isinstance(tag, str) or tag in INVISIBLE_TAGS:
            continue  # comments and invisible elements show nothing (their tail is shown)
        if tag in BLOCK_TAGS:
            pieces.append(" ")
            stack.append(" ")
        if node.text:
            pieces.append(node.text)
        stack.extend(reversed(node))
    return collapse_whitespace("".join(pieces))


def _is_heading_class(classes: str) -> bool:
    return any(name in classes.split() for name in HEADING_CLASSES)


def _cells(row: _Element) -> list[_Element]:
    return [cell for cell in row if cell.tag in ("td", "th")]


def _is_retired(row: _Element) -> bool:
    """Marked retired on the row or any element in it: a 'retired' class, or struck-through text."""
    for element in row.iter(etree.Element):
        if element.tag in STRUCK_TAGS or "line-through" in str(element.get("style") or ""):
            return True
        if "retired" in str(element.get("class") or "").lower():
            return True
    return False

"""The previous NHS DD extractor (BeautifulSoup over lxml), kept only as the oracle of the differential test.

It walks bs4's Python tree with ``normalise.html_to_text``; the product walks lxml's C tree. Both
feed the same ``scrapers.nhs_dd.options_from`` rules, so any difference in output is a difference
in how the two read the page, which the differential test turns into a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bs4 import BeautifulSoup, Tag

from scrapers.nhs_dd import HEADING_CLASSES, HEADINGS, STRUCK_TAGS, FoundTable, options_from
from scrapers.normalise import RawOption, html_to_text


def oracle_rows(text: str, url: str) -> list[RawOption]:
    return options_from(SoupPage(text), url)


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
                continue
            code, label = html_to_text(cells[0]), html_to_text(cells[1])
            if not code:
                continue
            yield code, label, _is_retired(row)


def _is_heading(tag: Tag) -> bool:
    classes = tag.get("class") or []
    return tag.name in HEADINGS or any(name in classes for name in HEADING_CLASSES)


def _cells(row: Tag) -> list[Tag]:
    return row.find_all(("td", "th"), recursive=False)


def _is_retired(row: Tag) -> bool:
    for tag in (row, *row.find_all(True)):
        if tag.name in STRUCK_TAGS or "line-through" in (tag.get("style") or ""):
            return True
        if any("retired" in css.lower() for css in tag.get("class") or []):
            return True
    return False

"""Turn what a source shows into canonical ``{code: label}`` options.

Labels are the text a browser shows: entities decoded, inline elements joined as rendered, block
boundaries as one space, every run of whitespace (NBSP and newlines included) collapsed, no markup
and no control characters. The same input always yields the same options and the same hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scrapers.errors import PermanentError

if TYPE_CHECKING:  # BeautifulSoup loads only for a label that holds markup (the NHS DD parser uses lxml)
    from bs4 import Tag
    from bs4.element import NavigableString, PageElement

BLOCK_TAGS = frozenset(
    (
        "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 header hr li main "
        "nav ol p pre section table tbody td tfoot th thead tr ul"
    ).split()
)
INVISIBLE_TAGS = frozenset({"script", "style", "template", "head", "title", "noscript"})
MARKUP = re.compile(r"<[A-Za-z/!?][^<>]*>")
# The Data Dictionary appends "(Retired <date>)" to a retired code's description; a live meaning
# such as "Retired from paid work" must not count.
RETIRED_MARK = re.compile(r"\(\s*retired\b", re.IGNORECASE)
DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


@dataclass(frozen=True)
class RawOption:
    """One row as a source found it, before cleaning."""

    code: str
    label: str
    retired: bool = False
    default: bool = False
    where: str = field(default="", compare=False)  # e.g. "<page URL> item 7", for errors naming the row


@dataclass(frozen=True)
class Limits:
    max_code_length: int = 64
    max_label_length: int = 1000


@dataclass(frozen=True)
class OptionList:
    options: dict[str, str]
    retired_codes: tuple[str, ...] = ()
    default_codes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def content_hash(self) -> str:
        return content_hash(self.options)


def html_to_text(node: Tag | str) -> str:
    """Render an element's text the way a browser lays it out, as one clean line."""
    pieces: list[str] = []
    _render(node, pieces)
    return collapse_whitespace("".join(pieces))


def _render(node: Tag | NavigableString | str, pieces: list[str]) -> None:
    """Depth first with an explicit stack: markup nested thousands deep must not exhaust recursion."""
    from bs4 import Comment, Tag

    stack: list[PageElement | str] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Comment):
            continue
        if isinstance(item, str):
            pieces.append(str(item))
            continue
        if not isinstance(item, Tag) or item.name in INVISIBLE_TAGS:
            continue
        if item.name in BLOCK_TAGS:
            pieces.append(" ")
            stack.append(" ")
        stack.extend(reversed(item.contents))


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def clean_text(text: str) -> str:
    """Plain, single-line text: idempotent, whatever the input (markup, entities inside tags...).

    Each round that changes the text makes it shorter (tags and entities go, whitespace folds once),
    so repeating until nothing changes always ends, however deeply markup was escaped.
    """
    while (cleaned := _clean_once(text)) != text:
        text = cleaned
    return text


def _clean_once(text: str) -> str:
    if MARKUP.search(text):
        from bs4 import BeautifulSoup

        text = html_to_text(BeautifulSoup(text, "lxml"))
        text = MARKUP.sub("", text)
    if text.isprintable():  # no control characters and no whitespace but spaces: nothing below would change
        return collapse_whitespace(text)
    text = "".join(
        " " if char.isspace() else char
        for char in text
        if char.isspace() or unicodedata.category(char) not in DROPPED_CATEGORIES
    )
    return collapse_whitespace(text)


def normalise(rows: Iterable[RawOption], limits: Limits = Limits(), source: str = "") -> OptionList:
    """Clean every row, keep source order, first occurrence of a code wins, report the rest.

    A row that cannot be kept (empty, or longer than the limits) fails the whole list with
    ``PermanentError("bad_row")`` naming it: leaving it out would apply a partial list.
    """
    options: dict[str, str] = {}
    retired: list[str] = []
    defaults: list[str] = []
    warnings: list[str] = []
    for position, row in enumerate(rows, start=1):
        code, label = clean_text(row.code), clean_text(row.label)
        problem = _row_problem(code, label, limits)
        if problem:
            where = row.where or (f"{source}: row {position}" if source else f"row {position}")
            raise PermanentError("bad_row", f"{where} (code {code[:40]!r}): {problem}; the list was not applied")
        if code in options:
            warnings.append(
                f"row {position}: duplicate code {code!r} ({label!r}) ignored; "
                f"first occurrence ({options[code]!r}) kept"
            )
            continue
        if row.retired and not RETIRED_MARK.search(label):
            label = f"{label} (Retired)"
        options[code] = label
        if row.retired or RETIRED_MARK.search(label):
            retired.append(code)
        if row.default:
            defaults.append(code)
    return OptionList(options, tuple(retired), tuple(defaults), tuple(warnings))


def _row_problem(code: str, label: str, limits: Limits) -> str | None:
    if not code:
        return "empty code"
    if not label:
        return "empty label"
    if len(code) > limits.max_code_length:
        return f"code longer than {limits.max_code_length} characters"
    if len(label) > limits.max_label_length:
        return f"label longer than {limits.max_label_length} characters ({len(label)})"
    return None


def content_hash(options: dict[str, str]) -> str:
    """SHA-256 of the ordered options: equal lists hash equal, reordering counts as a change."""
    canonical = json.dumps(list(options.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

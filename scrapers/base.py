"""The one small interface every source kind implements.

A source kind knows how to *fetch* its documents (one page, or a paginated API) and how to *parse*
them into raw rows. Everything else (cleaning, guarding, storing, recording) is the pipeline's job,
so adding a kind means adding one module here and registering it in ``scrapers/__init__.py``.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from scrapers.errors import PermanentError
from scrapers.http import Document, HttpClient, Validators
from scrapers.normalise import RawOption


class SourceParams(BaseModel):
    """Per-source catalogue keys; unknown keys are an error so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SourceEntry(Protocol):
    """What a source needs to know about a catalogue entry."""

    @property
    def key(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def allowed_hosts(self) -> frozenset[str]: ...

    @property
    def params(self) -> Any: ...


class Source(ABC):
    kind: ClassVar[str]
    source_type: ClassVar[str]
    params_model: ClassVar[type[SourceParams]] = SourceParams
    accept: ClassVar[str] = "*/*"

    def fetch(self, entry: SourceEntry, http: HttpClient, validators: Validators | None) -> list[Document]:
        """One conditional GET of the entry's URL; kinds with pagination override this."""
        return [
            http.get(
                entry.url,
                allowed_hosts=entry.allowed_hosts,
                headers=self.headers(entry),
                validators=validators,
                accept=self.accept,
            )
        ]

    def check_url(self, url: str) -> str | None:
        """Why ``url`` cannot be an address of this kind (checked with the catalogue), or None."""
        return None

    def headers(self, entry: SourceEntry) -> dict[str, str]:
        return {}

    def kept_validators(self, documents: list[Document]) -> Validators:
        """What to keep for the next fetch. A 304 on the first page of a paginated API says nothing
        about the other pages, so a fetch of several documents keeps only the token a kind put on
        the first one (a resource hash, an expansion identifier: ``Validators.token``)."""
        return documents[0].validators if len(documents) == 1 else Validators(token=documents[0].validators.token)

    def credential_variables(self, entry: SourceEntry) -> list[str]:
        """Environment variables the entry's credentials come from (``datasync catalogue check`` notes unset ones)."""
        return []

    def secrets(self, entry: SourceEntry) -> list[str]:
        """Values that must never appear in logs, errors or ``sync_runs``: every credential's value."""
        return [value for name in self.credential_variables(entry) if (value := os.environ.get(name))]

    @abstractmethod
    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        """Rows in source order; raise ``PermanentError`` when the documents hold no list."""


def source_token(entry: SourceEntry, upstream: str | None) -> str | None:
    """The upstream's proof of "unchanged", tied to the entry: after an edit of the entry (another
    column, another code system) the list is fetched in full even when the upstream did not move."""
    if upstream is None:
        return None
    params = entry.params.model_dump_json() if isinstance(entry.params, BaseModel) else repr(entry.params)
    keys = hashlib.sha256(f"{entry.url}\n{params}".encode()).hexdigest()[:16]
    return f"{upstream}|{keys}"


def require_text(document: Document) -> None:
    """A binary body (an error page image, a truncated archive) is a clear error, not 'no table'."""
    if b"\x00" in document.body[:4096]:
        raise PermanentError("garbage", f"{document.url}: the body is binary, not text")


def decode_text(document: Document, charset: str | None = None) -> str:
    """Decode strictly by ``charset`` (default: the declared one, else UTF-8); undecodable bytes are an error.

    A wrong byte is never replaced by U+FFFD or read in another charset: a stored label must be
    exactly what the source shows, so the error names where the bad bytes are instead.
    """
    decoded = decode_marked(document, charset)
    if decoded.marker:
        raise decoded.error("the body")
    return decoded.text


@dataclass(frozen=True)
class MarkedText:
    """A body decoded with every undecodable byte sequence replaced by ``marker`` (absent otherwise).

    Parsers that can name a row use this: the marker survives parsing, so a row whose code or label
    holds it is the row the bad bytes are in.
    """

    url: str
    text: str
    encoding: str
    marker: str | None = None
    bad_offset: int = -1
    bad_count: int = 0

    def error(self, where: str) -> PermanentError:
        return PermanentError(
            "decode",
            f"{self.url}: {where} is not valid {self.encoding} text ({self.bad_count} undecodable byte "
            f"sequence(s), the first at byte {self.bad_offset})",
        )


def decode_marked(document: Document, charset: str | None = None) -> MarkedText:
    require_text(document)
    body, encoding = document.body, _known_codec(charset or document.charset) or "utf-8"
    if encoding == "utf-8" and body.startswith(codecs.BOM_UTF8):
        body = body[len(codecs.BOM_UTF8) :]
    try:
        return MarkedText(document.url, body.decode(encoding), encoding)
    except UnicodeDecodeError as error:
        bad_offset = error.start
    text = body.decode(encoding, _MARK_ERRORS)
    marker = next(chr(point) for point in range(0xF0000, 0xFFFFE) if chr(point) not in text)
    count = text.count(_UNDECODABLE)
    return MarkedText(document.url, text.replace(_UNDECODABLE, marker), encoding, marker, bad_offset, count)


def html_charset(document: Document) -> str:
    """The charset a browser would use: UTF-8 BOM, HTTP header, ``<meta>`` in the first 1 KB, else UTF-8.

    Labels the WHATWG encoding standard maps to windows-1252 (latin-1, ASCII) are read as
    windows-1252, as browsers do, so a curly quote in an "iso-8859-1" page is not a control character.
    """
    if document.body.startswith(codecs.BOM_UTF8):
        return "utf-8"
    declared = _known_codec(document.charset)
    if declared is None and (meta := _META_CHARSET.search(document.body[:1024])):
        declared = _known_codec(meta.group(1).decode("ascii"))
        if declared and declared.startswith(("utf-16", "utf-32")):
            declared = "utf-8"  # the bytes that say so are ASCII: a <meta> cannot declare UTF-16
    if declared in ("iso8859-1", "ascii"):
        return "cp1252"
    return declared or "utf-8"


def _known_codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


_UNDECODABLE = "\ud800"  # a lone surrogate: no strict decoder produces one, so it only marks bad bytes
_MARK_ERRORS = "datasync-mark-undecodable"


def _mark_undecodable(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return _UNDECODABLE, error.end


codecs.register_error(_MARK_ERRORS, _mark_undecodable)
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE)

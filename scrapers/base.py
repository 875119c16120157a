"""The one small interface every source kind implements.

A source kind knows how to *fetch* its documents (one page, or a paginated API) and how to *parse*
them into raw rows. Everything else (cleaning, guarding, storing, recording) is the pipeline's job,
so adding a kind means adding one module here and registering it in ``scrapers/__init__.py``.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from scrapers.errors import PermanentError
from scrapers.http import Document, HttpClient, Validators
from scrapers.normalise import RawOption


class SourceParams(BaseModel):
    """Per-source catalogue keys; unknown keys are an error so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


def decode_text(document: Document) -> str:
    """Decode by the declared charset, else UTF-8; a body that is not text is a clear error."""
    require_text(document)
    body = document.body
    for encoding in filter(None, (document.charset, "utf-8-sig")):
        try:
            return body.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    raise PermanentError("decode", f"{document.url}: the body is not valid {document.charset or 'UTF-8'} text")

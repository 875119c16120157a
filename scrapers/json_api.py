"""JSON APIs (the RCPCH NHS Organisations API and the like): items mapped to options by field paths.

Accepts a plain list or a Django REST Framework page (``{"count", "next", "results"}``) and
follows ``next`` until the last page, because the full organisation lists are paginated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from pydantic import Field, field_validator

from scrapers.base import Source, SourceEntry, SourceParams, decode_text
from scrapers.errors import PermanentError
from scrapers.http import Document, HttpClient, Validators
from scrapers.normalise import RawOption


class JsonApiParams(SourceParams):
    code_field: tuple[str, ...]
    label_field: tuple[str, ...]
    label_default: str | None = None
    children_field: str | None = None
    api_key_env: str | None = None
    api_key_header: str = "Authorization"
    max_pages: int = Field(500, ge=1)

    @field_validator("code_field", "label_field", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value


class JsonApi(Source):
    kind = "json_api"
    source_type = "api"
    params_model = JsonApiParams
    accept = "application/json"

    def fetch(self, entry: SourceEntry, http: HttpClient, validators: Validators | None) -> list[Document]:
        """First page conditionally (a 304 ends the sync as unchanged), then every ``next`` page."""
        params: JsonApiParams = entry.params
        headers = self.headers(entry)
        documents = [
            http.get(
                entry.url, allowed_hosts=entry.allowed_hosts, headers=headers, validators=validators, accept=self.accept
            )
        ]
        while (next_url := _next_page(documents[-1])) is not None:
            if len(documents) >= params.max_pages:
                raise PermanentError("too_many_pages", f"{entry.url}: more than {params.max_pages} pages")
            canonical = http.rewrites.undo(next_url)
            documents.append(
                http.get(canonical, allowed_hosts=entry.allowed_hosts, headers=headers, accept=self.accept)
            )
        return documents

    def headers(self, entry: SourceEntry) -> dict[str, str]:
        params: JsonApiParams = entry.params
        key = os.environ.get(params.api_key_env or "", "")
        return {params.api_key_header: key} if key else {}

    def secrets(self, entry: SourceEntry) -> list[str]:
        return list(self.headers(entry).values())

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        params: JsonApiParams = entry.params
        rows: list[RawOption] = []
        for document in documents:
            for position, item in enumerate(_items(document), start=1):
                where = f"{document.url} item {position}"
                rows.append(_option(item, params, where))
                for child_position, child in enumerate(_children(item, params, where), start=1):
                    rows.append(_option(child, params, f"{where} child {child_position}"))
        return rows


def load_json(document: Document) -> Any:
    try:
        return json.loads(decode_text(document))
    except json.JSONDecodeError as exc:
        raise PermanentError("bad_json", f"{document.url}: the body is not valid JSON ({exc})") from exc


def _next_page(document: Document) -> str | None:
    payload = load_json(document)
    next_url = payload.get("next") if isinstance(payload, dict) else None
    return next_url if isinstance(next_url, str) and next_url else None


def _items(document: Document) -> list[Any]:
    payload = load_json(document)
    if isinstance(payload, dict) and isinstance(payload.get("results"), list):
        return list(payload["results"])
    if isinstance(payload, list):
        return payload
    raise PermanentError(
        "unexpected_shape",
        f"{document.url}: expected a JSON list or a page with 'results', got {type(payload).__name__}",
    )


def _children(item: Any, params: JsonApiParams, where: str) -> Iterator[Any]:
    if not params.children_field or not isinstance(item, dict):
        return iter(())
    children = item.get(params.children_field) or []
    if not isinstance(children, list):
        raise PermanentError("unexpected_shape", f"{where}: {params.children_field!r} is not a list")
    return iter(children)


def _option(item: Any, params: JsonApiParams, where: str) -> RawOption:
    if not isinstance(item, dict):
        raise PermanentError("unexpected_shape", f"{where}: expected an object, got {type(item).__name__}")
    code = _first_value(item, params.code_field)
    if code is None:
        raise PermanentError("missing_field", f"{where}: none of {', '.join(params.code_field)} has a value")
    label = _first_value(item, params.label_field)
    if label is None and params.label_default:
        try:
            label = params.label_default.format_map(item)
        except (KeyError, IndexError, ValueError) as exc:
            raise PermanentError("missing_field", f"{where}: label_default needs field {exc}") from exc
    if label is None:
        raise PermanentError("missing_field", f"{where}: none of {', '.join(params.label_field)} has a value")
    return RawOption(code=str(code), label=str(label))


def _first_value(item: dict[str, Any], paths: tuple[str, ...]) -> Any:
    for path in paths:
        value: Any = item
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, ""):
            return value
    return None

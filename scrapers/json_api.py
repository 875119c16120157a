"""JSON APIs (the RCPCH NHS Organisations API and the like): items mapped to options by field paths.

Accepts a plain list or a Django REST Framework page (``{"count", "next", "results"}``) and
follows ``next`` until the last page, because the full organisation lists are paginated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

from pydantic import Field, field_validator

from scrapers.base import Source, SourceEntry, SourceParams, decode_text
from scrapers.errors import PermanentError, TransientError
from scrapers.http import Document, HttpClient, Validators
from scrapers.normalise import RawOption


class JsonApiParams(SourceParams):
    code_field: tuple[str, ...]
    label_field: tuple[str, ...]
    label_default: str | None = None
    children_field: str | None = None
    api_key_env: str | None = None
    api_key_header: str = "Authorization"
    max_pages: int = Field(default=500, ge=1, le=10_000)

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
        """First page conditionally (a 304 ends the sync as unchanged), then every ``next`` page.

        The pages must agree with each other, or the list is incomplete and nothing may be applied:
        no page after the first is empty, no ``next`` leads back to a page already fetched, and the
        items collected add up to page 1's ``count`` when the API gives one.
        """
        headers = self.headers(entry)
        first = http.get(
            entry.url, allowed_hosts=entry.allowed_hosts, headers=headers, validators=validators, accept=self.accept
        )
        documents, first_payload = [first], load_json(first)
        payload, collected = first_payload, len(_items(first_payload, first.url))
        while (next_url := _next_page(payload)) is not None:
            document = self._follow(entry, http, headers, documents, next_url)
            documents.append(document)
            payload = load_json(document)
            collected += len(_later_items(payload, document.url))
        _check_count(entry.url, first_payload, collected)
        return documents

    def _follow(
        self, entry: SourceEntry, http: HttpClient, headers: dict[str, str], fetched: list[Document], next_url: str
    ) -> Document:
        """The page ``next`` points at, unless it leads back to a fetched page or past ``max_pages``."""
        params: JsonApiParams = entry.params
        canonical = http.rewrites.undo(next_url)
        if canonical in {document.url for document in fetched}:
            raise PermanentError("page_loop", f"{fetched[-1].url}: 'next' leads back to {canonical}, already fetched")
        if len(fetched) >= params.max_pages:
            raise PermanentError("too_many_pages", f"{entry.url}: more than {params.max_pages} pages")
        return http.get(canonical, allowed_hosts=entry.allowed_hosts, headers=headers, accept=self.accept)

    def headers(self, entry: SourceEntry) -> dict[str, str]:
        params: JsonApiParams = entry.params
        key = _api_key(params).strip()  # a key read from a file often ends in a newline that is not part of it
        return {params.api_key_header: key} if key else {}

    def secrets(self, entry: SourceEntry) -> list[str]:
        key = _api_key(entry.params)
        return [key] if key.strip() else []

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        params: JsonApiParams = entry.params
        rows: list[RawOption] = []
        for document in documents:
            for position, item in enumerate(_items(load_json(document), document.url), start=1):
                where = f"{document.url} item {position}"
                rows.append(_option(item, params, where))
                for child_position, child in enumerate(_children(item, params, where), start=1):
                    rows.append(_option(child, params, f"{where} child {child_position}"))
        return rows


def _api_key(params: JsonApiParams) -> str:
    return os.environ.get(params.api_key_env or "", "")


def load_json(document: Document) -> Any:
    """The body as JSON; nesting or numbers Python cannot hold are named errors, not ``internal``."""
    text = decode_text(document)
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise PermanentError("bad_json", f"{document.url}: the body is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise PermanentError("too_deep", f"{document.url}: the JSON is nested too deeply to read") from exc
    except ValueError as exc:  # an integer past Python's digit limit, a float past its range, NaN/Infinity
        raise PermanentError(
            "bad_number", f"{document.url}: the JSON holds a number that cannot be read: {exc}"
        ) from exc


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _next_page(payload: Any) -> str | None:
    next_url = payload.get("next") if isinstance(payload, dict) else None
    return next_url if isinstance(next_url, str) and next_url else None


def _check_count(url: str, first_page: Any, collected: int) -> None:
    """Page 1's ``count`` (when the API gives one) is the whole list: fewer or more items is a partial read."""
    count = first_page.get("count") if isinstance(first_page, dict) else None
    if isinstance(count, int) and not isinstance(count, bool) and count != collected:
        raise TransientError(
            "incomplete", f"{url}: the first page counts {count} items, but the pages held {collected}"
        )


def _later_items(payload: Any, url: str) -> list[Any]:
    """A page reached through ``next`` was promised to hold more items: empty means the list ended early."""
    items = _items(payload, url)
    if not items:
        raise TransientError("incomplete", f"{url}: empty page, although the page before promised more ('next')")
    return items


def _items(payload: Any, url: str) -> list[Any]:
    results = payload.get("results") if isinstance(payload, dict) else None
    if isinstance(results, list):
        return results
    if isinstance(payload, list):
        return payload
    raise PermanentError(
        "unexpected_shape", f"{url}: expected a JSON list or a page with 'results', got {type(payload).__name__}"
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
    return RawOption(code=_text(code, "code", where), label=_text(label, "label", where), where=where)


def _text(value: Any, what: str, where: str) -> str:
    """Strings and numbers are shown as the source wrote them; a boolean, object or array is not a code or label."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    kind = {bool: "boolean", dict: "object", list: "array"}.get(type(value), type(value).__name__)
    shown = json.dumps(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise PermanentError("bad_value", f"{where}: the {what} is a JSON {kind} ({shown}), not a string or a number")


def _first_value(item: dict[str, Any], paths: tuple[str, ...]) -> Any:
    for path in paths:
        value: Any = item
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, ""):
            return value
    return None

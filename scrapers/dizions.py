"""Charitylog dictionaries through the Dizions API (seed 002): ``{base}/dictionary/{group}/{table}``.

``url`` is the API base (``https://api.dizions.co.uk/v2``); ``group`` and ``table`` name the
dictionary and are percent-encoded into the path. A dictionary is the full list of ids and
friendly names, as an object ``{"1": "Barnet", ...}`` or a list of ``{"id", "name"}`` objects;
ids are kept as strings. Authentication is a set of headers (the vendor documents ``Source``,
``Org`` and ``User``; a gateway may want ``Authorization``), each taken from an environment
variable the catalogue names. The API's write verbs are inverted (PUT creates), so this kind only
ever GETs.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

from pydantic import Field, field_validator

from scrapers.base import Source, SourceEntry, SourceParams
from scrapers.errors import PermanentError, SyncError
from scrapers.http import Document, HttpClient, Validators
from scrapers.json_api import load_json
from scrapers.normalise import RawOption

HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DizionsParams(SourceParams):
    group: str = Field(min_length=1)
    table: str = Field(min_length=1)
    auth_headers: dict[str, str] = Field(min_length=1)
    id_field: str = "id"
    name_field: str = "name"

    @field_validator("auth_headers")
    @classmethod
    def _header_to_variable(cls, value: dict[str, str]) -> dict[str, str]:
        for header, env in value.items():
            if not HEADER_NAME.match(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if not ENV_NAME.match(env):
                raise ValueError(f"{header!r}: {env!r} is not an environment variable name (never put the value here)")
        return value


class Dizions(Source):
    kind = "dizions"
    source_type = "api"
    params_model = DizionsParams
    accept = "application/json"

    def fetch(self, entry: SourceEntry, http: HttpClient, validators: Validators | None) -> list[Document]:
        url = dictionary_url(entry)
        try:
            return [
                http.get(
                    url,
                    allowed_hosts=entry.allowed_hosts,
                    headers=self.headers(entry),
                    validators=validators,
                    accept=self.accept,
                )
            ]
        except SyncError as error:
            if error.kind in ("http_401", "http_403"):
                names = ", ".join(f"{header} (from {env})" for header, env in entry.params.auth_headers.items())
                raise PermanentError(
                    "access_denied", f"{url}: HTTP {error.kind[-3:]}: Charitylog refused the credentials {names}"
                ) from error
            if error.kind == "http_404":
                raise PermanentError("unknown_dictionary", f"{url}: HTTP 404: no such Charitylog dictionary") from error
            raise

    def headers(self, entry: SourceEntry) -> dict[str, str]:
        params: DizionsParams = entry.params
        missing = [env for env in params.auth_headers.values() if not os.environ.get(env)]
        if missing:
            raise PermanentError(
                "missing_credentials", f"{entry.url}: environment variable(s) {', '.join(missing)} not set"
            )
        return {header: os.environ[env] for header, env in params.auth_headers.items()}

    def credential_variables(self, entry: SourceEntry) -> list[str]:
        params: DizionsParams = entry.params
        return list(params.auth_headers.values())

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        params: DizionsParams = entry.params
        document = documents[0]
        payload = load_json(document)
        if isinstance(payload, dict) and all(isinstance(value, str) for value in payload.values()) and payload:
            return [RawOption(code=str(key), label=value) for key, value in payload.items()]
        if isinstance(payload, list):
            return [_item(document.url, position, item, params) for position, item in enumerate(payload, start=1)]
        raise PermanentError(
            "unexpected_shape",
            f"{document.url}: expected a dictionary ({{id: name}} or a list of {{{params.id_field!r}, "
            f"{params.name_field!r}}} objects), got {_shape(payload)}",
        )


def dictionary_url(entry: SourceEntry) -> str:
    params: DizionsParams = entry.params
    return f"{entry.url.rstrip('/')}/dictionary/{quote(params.group, safe='')}/{quote(params.table, safe='')}"


def _item(url: str, position: int, item: Any, params: DizionsParams) -> RawOption:
    if not isinstance(item, dict) or item.get(params.id_field) is None or item.get(params.name_field) is None:
        raise PermanentError(
            "missing_field", f"{url}: item {position} has no {params.id_field!r} and {params.name_field!r}"
        )
    return RawOption(code=str(item[params.id_field]), label=str(item[params.name_field]))


def _shape(payload: Any) -> str:
    if isinstance(payload, dict):
        return f"an object with keys {', '.join(map(repr, list(payload)[:10])) or '(none)'}"
    return type(payload).__name__

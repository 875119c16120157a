"""DataPress open-data portals (seed 003): a dataset document, then one CSV resource in it.

``url`` is the dataset document, ``https://{site}/api/dataset/{id}``. The document lists the
dataset's files with an MD5 ``hash`` and a ``size``; when both equal those of the last applied
download, the file is not downloaded at all. A downloaded file must match both before it is parsed.
Private datasets take ``Authorization: <key>`` (the raw key) from an environment variable; the key
is sent to the site only, never to a storage host a download redirects to.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from pydantic import Field

from scrapers.base import Source, SourceEntry, source_token
from scrapers.csv_file import CsvColumns, parse_csv
from scrapers.errors import PermanentError, SyncError
from scrapers.http import Document, HttpClient, NotModified, Validators, host_of
from scrapers.json_api import load_json
from scrapers.normalise import RawOption

DATASET_PATH = re.compile(r"/api/(?:v3/)?dataset/[A-Za-z0-9_-]+/?$")


class DataPressParams(CsvColumns):
    resource_id: str | None = Field(None, min_length=1)
    api_key_env: str | None = Field(None, min_length=1)


class DataPress(Source):
    kind = "datapress"
    source_type = "api"
    params_model = DataPressParams
    accept = "application/json"

    def check_url(self, url: str) -> str | None:
        if DATASET_PATH.search(url.split("?")[0]):
            return None
        return "must be a DataPress dataset URL, https://{site}/api/dataset/{id}"

    def fetch(self, entry: SourceEntry, http: HttpClient, validators: Validators | None) -> list[Document]:
        """The dataset document, then the chosen file unless its hash and size are the applied ones."""
        params: DataPressParams = entry.params
        dataset = self._get(entry, http, entry.url, self.accept)
        resource_id, resource = choose_resource(dataset, params.resource_id)
        token = source_token(
            entry, ":".join(str(part)[:70] for part in (resource_id, resource["hash"], resource["size"]))
        )
        if validators and validators.token == token:
            raise NotModified(entry.url, f"DataPress resource {resource_id!r} unchanged (same hash and size)")
        file = self._get(entry, http, resource["url"], "text/csv, */*;q=0.1")
        _verify(file, resource_id, resource)
        dataset.validators = Validators(token=token)
        return [dataset, file]

    def headers(self, entry: SourceEntry) -> dict[str, str]:
        params: DataPressParams = entry.params
        if not params.api_key_env:
            return {}
        key = os.environ.get(params.api_key_env, "")
        if not key:
            raise PermanentError(
                "missing_credentials", f"{entry.url}: environment variable {params.api_key_env} is not set"
            )
        return {"Authorization": key}

    def credential_variables(self, entry: SourceEntry) -> list[str]:
        params: DataPressParams = entry.params
        return [params.api_key_env] if params.api_key_env else []

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        return parse_csv(documents[-1], entry.params)

    def _get(self, entry: SourceEntry, http: HttpClient, url: str, accept: str) -> Document:
        params: DataPressParams = entry.params
        headers = self.headers(entry) if host_of(url) == host_of(entry.url) else {}  # the key stays with the site
        try:
            return http.get(url, allowed_hosts=entry.allowed_hosts, headers=headers, accept=accept)
        except SyncError as error:
            if error.kind == "http_403":
                problem = (
                    f"the key in {params.api_key_env} may not read it"
                    if params.api_key_env
                    else "set api_key_env to a variable holding a key that may read it"
                )
                raise PermanentError("access_denied", f"{url}: HTTP 403: the dataset is private; {problem}") from error
            if error.kind == "http_404" and url == entry.url:
                raise PermanentError("unknown_dataset", f"{url}: HTTP 404: no such DataPress dataset") from error
            raise


def choose_resource(dataset: Document, resource_id: str | None) -> tuple[str, dict[str, Any]]:
    """The resource named by ``resource_id``, else the dataset's only CSV file."""
    payload = load_json(dataset)
    resources = payload.get("resources") if isinstance(payload, dict) else None
    if not isinstance(resources, dict):
        raise PermanentError("unexpected_shape", f"{dataset.url}: not a DataPress dataset (no 'resources' object)")
    listing = ", ".join(f"{key} ({_format(value)})" for key, value in resources.items()) or "none"
    if resource_id is not None:
        if resource_id not in resources:
            raise PermanentError("unknown_resource", f"{dataset.url}: no resource {resource_id!r}; it has {listing}")
        if _format(resources[resource_id]) != "csv":
            raise PermanentError(
                "not_csv", f"{dataset.url}: resource {resource_id!r} is {_format(resources[resource_id])}, not csv"
            )
        chosen = [resource_id]
    else:
        chosen = [key for key, value in resources.items() if _format(value) == "csv"]
        if len(chosen) != 1:
            problem = "no CSV resource" if not chosen else "several CSV resources, set resource_id"
            raise PermanentError("ambiguous_resource", f"{dataset.url}: {problem}; it has {listing}")
    resource = resources[chosen[0]]
    missing = [name for name, kind in (("url", str), ("hash", str), ("size", int)) if not _has(resource, name, kind)]
    if missing:
        raise PermanentError(
            "unexpected_shape", f"{dataset.url}: resource {chosen[0]!r} has no valid {', '.join(map(repr, missing))}"
        )
    return chosen[0], resource


def _has(resource: Any, name: str, kind: type) -> bool:
    value = resource.get(name) if isinstance(resource, dict) else None
    return isinstance(value, kind) and not isinstance(value, bool)


def _format(resource: Any) -> str:
    return str(resource.get("format", "")).lower() if isinstance(resource, dict) else ""


def _verify(file: Document, resource_id: str, resource: dict[str, Any]) -> None:
    """The download is the file the document describes, byte for byte, or nothing is applied."""
    if len(file.body) != resource["size"]:
        raise PermanentError(
            "size_mismatch",
            f"{file.url}: resource {resource_id!r} is {len(file.body)} bytes, the dataset says {resource['size']}",
        )
    digest = hashlib.md5(file.body, usedforsecurity=False).hexdigest()
    if digest != str(resource["hash"]).lower():
        raise PermanentError(
            "hash_mismatch",
            f"{file.url}: resource {resource_id!r} has MD5 {digest}, the dataset says {resource['hash']}",
        )

"""ArcGIS FeatureServer layers (the ONS Open Geography Portal): ``features[].attributes`` by field name.

``url`` is the layer's query endpoint, ``.../FeatureServer/0/query``; datasync adds the query
(``where``, ``outFields`` = only the fields the entry maps, ``orderByFields`` so pages are stable,
``f=json``, no geometry) and pages with ``resultOffset`` while ``exceededTransferLimit`` is true.
The layer's ``editingInfo.lastEditDate`` (from ``.../FeatureServer/0?f=json``, a small document)
is the source token: when it has not moved, no feature is downloaded.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from pydantic import Field, field_validator, model_validator

from scrapers.base import Source, SourceEntry, SourceParams, source_token
from scrapers.errors import PermanentError
from scrapers.http import Document, HttpClient, NotModified, Validators
from scrapers.json_api import load_json
from scrapers.normalise import RawOption
from scrapers.records import FieldMap, check_template

QUERY_PATH = re.compile(r"/(?:FeatureServer|MapServer)/\d+/query$")


class ArcGisParams(SourceParams):
    code_field: str = Field(min_length=1)
    label_field: str | None = Field(None, min_length=1)
    label_template: str | None = None
    where: str = Field("1=1", min_length=1)
    page_size: int = Field(1000, ge=1, le=10000)
    max_pages: int = Field(500, ge=1)

    _template = field_validator("label_template")(check_template)

    @model_validator(mode="after")
    def _one_label(self) -> ArcGisParams:
        if (self.label_field is None) == (self.label_template is None):
            raise ValueError("set exactly one of label_field and label_template")
        return self

    @property
    def fields(self) -> FieldMap:
        return FieldMap(self.code_field, self.label_field, self.label_template)


class ArcGis(Source):
    kind = "arcgis"
    source_type = "api"
    params_model = ArcGisParams
    accept = "application/json"

    def check_url(self, url: str) -> str | None:
        if "?" in url or not QUERY_PATH.search(url):
            return "must be a layer query endpoint without parameters, .../FeatureServer/0/query"
        return None

    def fetch(self, entry: SourceEntry, http: HttpClient, validators: Validators | None) -> list[Document]:
        """The layer's edit date, then every page of features unless that date is the stored one."""
        params: ArcGisParams = entry.params
        edited = self._last_edit(entry, http)
        token = source_token(entry, edited)
        if token is not None and validators and validators.token == token:
            raise NotModified(entry.url, f"ArcGIS layer not edited since {edited} (editingInfo.lastEditDate)")
        pages = [self._page(entry, http, 0)]
        while _more(pages[-1]):
            if len(pages) >= params.max_pages:
                raise PermanentError("too_many_pages", f"{entry.url}: more than {params.max_pages} pages")
            pages.append(self._page(entry, http, sum(len(_features(page)) for page in pages)))
        pages[0].validators = Validators(token=token)
        return pages

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        params: ArcGisParams = entry.params
        rows = []
        for document in documents:
            for position, feature in enumerate(_features(document), start=1):
                attributes = feature.get("attributes") if isinstance(feature, dict) else None
                if not isinstance(attributes, dict):
                    raise PermanentError("unexpected_shape", f"{document.url}: feature {position} has no attributes")
                params.fields.check(attributes, f"{document.url}: feature {position}", noun="field")
                rows.append(params.fields.option(attributes))
        return rows

    def _page(self, entry: SourceEntry, http: HttpClient, offset: int) -> Document:
        params: ArcGisParams = entry.params
        query = {
            "where": params.where,
            "outFields": ",".join(params.fields.needed),
            "orderByFields": params.code_field,
            "returnGeometry": "false",
            "resultOffset": str(offset),
            "resultRecordCount": str(params.page_size),
            "f": "json",
        }
        document = http.get(f"{entry.url}?{urlencode(query)}", allowed_hosts=entry.allowed_hosts, accept=self.accept)
        _features(document)
        if _more(document) and not _features(document):
            raise PermanentError("short_page", f"{document.url}: an empty page that says more features follow")
        return document

    def _last_edit(self, entry: SourceEntry, http: HttpClient) -> str | None:
        layer_url = entry.url.removesuffix("/query") + "?f=json"
        payload = _arcgis_json(http.get(layer_url, allowed_hosts=entry.allowed_hosts, accept=self.accept))
        editing = payload.get("editingInfo")
        edited = editing.get("lastEditDate") if isinstance(editing, dict) else None
        return str(edited) if isinstance(edited, int) and not isinstance(edited, bool) else None


def _arcgis_json(document: Document) -> dict[str, Any]:
    """The payload; ArcGIS reports errors as HTTP 200 with an ``error`` object."""
    payload = load_json(document)
    if not isinstance(payload, dict):
        raise PermanentError(
            "unexpected_shape", f"{document.url}: expected a JSON object, got {type(payload).__name__}"
        )
    error = payload.get("error")
    if isinstance(error, dict):
        details = "; ".join(str(detail) for detail in error.get("details") or [])
        raise PermanentError(
            "arcgis_error",
            f"{document.url}: ArcGIS error {error.get('code', '?')}: {error.get('message', 'no message')}"
            + (f" ({details})" if details else ""),
        )
    return payload


def _features(document: Document) -> list[Any]:
    features = _arcgis_json(document).get("features")
    if not isinstance(features, list):
        raise PermanentError("unexpected_shape", f"{document.url}: no 'features' list (not a FeatureServer query)")
    return features


def _more(document: Document) -> bool:
    return _arcgis_json(document).get("exceededTransferLimit") is True

"""A short reference list written in the catalogue itself (the four UK countries, yes/no lists).

For lists that no upstream publishes in a usable form and that change only when someone edits
the catalogue. Nothing is fetched: ``url`` is the reference address stored with the dataset. The
options keep the order they are written in; an unchanged list is ``unchanged`` by its content hash,
and a catalogue edit of its name or tags reaches the row on the next sync (no token to skip it).
"""

from __future__ import annotations

import json

from pydantic import Field

from scrapers.base import Source, SourceEntry, SourceParams
from scrapers.http import Document, HttpClient, Validators
from scrapers.json_api import load_json
from scrapers.normalise import RawOption


class StaticListParams(SourceParams):
    options: dict[str, str] = Field(min_length=1)


class StaticList(Source):
    kind = "static_list"
    source_type = "manual"
    params_model = StaticListParams

    def fetch(self, entry: SourceEntry, http: HttpClient, validators: Validators | None) -> list[Document]:
        params: StaticListParams = entry.params
        body = json.dumps(list(params.options.items()), ensure_ascii=False).encode("utf-8")
        return [Document(entry.url, body, "application/json", "utf-8")]

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        return [RawOption(code=code, label=label) for code, label in load_json(documents[0])]

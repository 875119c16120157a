"""Lists datasync has without the network (a package's data, the catalogue's own text).

They are handed to the pipeline as one JSON document of ``[code, label]`` pairs, so hashing,
guarding and storing work exactly as for fetched lists.
"""

from __future__ import annotations

import json
from abc import abstractmethod

from scrapers.base import Source, SourceEntry
from scrapers.http import Document, HttpClient, Validators
from scrapers.json_api import load_json
from scrapers.normalise import RawOption


class LocalSource(Source):
    @abstractmethod
    def pairs(self, entry: SourceEntry) -> list[tuple[str, str]]:
        """``(code, label)`` in list order."""

    def fetch(self, entry: SourceEntry, http: HttpClient, validators: Validators | None) -> list[Document]:
        body = json.dumps(self.pairs(entry), ensure_ascii=False).encode("utf-8")
        return [Document(entry.url, body, "application/json", "utf-8")]

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        return [RawOption(code=code, label=label) for code, label in load_json(documents[0])]

"""A short reference list written in the catalogue itself (the four UK countries, yes/no lists).

For lists that no upstream publishes in a usable form and that change only when someone edits
the catalogue. Nothing is fetched: ``url`` is the reference address stored with the dataset. The
options keep the order they are written in; an unchanged list is ``unchanged`` by its content hash,
and a catalogue edit of its name or tags reaches the row on the next sync (no token to skip it).
"""

from __future__ import annotations

from pydantic import Field

from scrapers.base import SourceEntry, SourceParams
from scrapers.local import LocalSource


class StaticListParams(SourceParams):
    options: dict[str, str] = Field(min_length=1)


class StaticList(LocalSource):
    kind = "static_list"
    source_type = "manual"
    params_model = StaticListParams

    def pairs(self, entry: SourceEntry) -> list[tuple[str, str]]:
        params: StaticListParams = entry.params
        return list(params.options.items())

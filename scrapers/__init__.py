"""Source kinds, by the name the catalogue's ``source`` key uses.

Each kind's module loads when the kind is first used, so importing a part of this package (the
settings check ``scrapers.throttle``'s host limits) loads no HTTP stack or HTML parser, and a catalogue
loads only the kinds it names (issue 11: every command's start-up memory).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapers.base import Source

KINDS = {
    "nhs_dd": "scrapers.nhs_dd:NhsDataDictionary",
    "json_api": "scrapers.json_api:JsonApi",
    "fhir_valueset": "scrapers.fhir_valueset:FhirValueSet",
    "dizions": "scrapers.dizions:Dizions",
    "datapress": "scrapers.datapress:DataPress",
    "csv": "scrapers.csv_file:CsvFile",
    "arcgis": "scrapers.arcgis:ArcGis",
    "iso_countries": "scrapers.iso_countries:IsoCountries",
    "static_list": "scrapers.static_list:StaticList",
}


class SourceRegistry(Mapping[str, "Source"]):
    """The source kinds by name (``module:class`` each), one instance per kind, made on first use."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        self._kinds = dict(kinds)
        self._made: dict[str, Source] = {}
        self._lock = threading.Lock()

    def __getitem__(self, kind: str) -> Source:
        if kind not in self._made:
            module, name = self._kinds[kind].split(":")  # an unknown kind raises KeyError, as a dict does
            source = getattr(import_module(module), name)()
            with self._lock:  # the sync threads may ask at once: all of them get the same instance
                self._made.setdefault(kind, source)
        return self._made[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)


SOURCES = SourceRegistry(KINDS)

__all__ = ["SOURCES", "SourceRegistry"]

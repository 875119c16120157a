"""Source kinds, by the name the catalogue's ``source`` key uses."""

from scrapers.base import Source
from scrapers.json_api import JsonApi
from scrapers.nhs_dd import NhsDataDictionary

SOURCES: dict[str, Source] = {source.kind: source for source in (NhsDataDictionary(), JsonApi())}

__all__ = ["SOURCES", "Source"]

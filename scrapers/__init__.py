"""Source kinds, by the name the catalogue's ``source`` key uses."""

from scrapers.arcgis import ArcGis
from scrapers.base import Source
from scrapers.csv_file import CsvFile
from scrapers.datapress import DataPress
from scrapers.dizions import Dizions
from scrapers.fhir_valueset import FhirValueSet
from scrapers.iso_countries import IsoCountries
from scrapers.json_api import JsonApi
from scrapers.nhs_dd import NhsDataDictionary
from scrapers.static_list import StaticList

SOURCES: dict[str, Source] = {
    source.kind: source
    for source in (
        NhsDataDictionary(),
        JsonApi(),
        FhirValueSet(),
        Dizions(),
        DataPress(),
        CsvFile(),
        ArcGis(),
        IsoCountries(),
        StaticList(),
    )
}

__all__ = ["SOURCES", "Source"]

"""ISO 3166-1 countries from the ``pycountry`` package: a reference list that needs no network.

The list changes only when the installed package's data does: the same package gives the same
content hash, so a re-sync is ``unchanged`` with no version bump. ``url`` is only the reference
address stored with the dataset (e.g. the ISO 3166 page); nothing is fetched from it.
"""

from __future__ import annotations

from typing import Literal

import pycountry

from scrapers.base import SourceEntry, SourceParams
from scrapers.local import LocalSource


class IsoCountriesParams(SourceParams):
    code: Literal["alpha_2", "alpha_3", "numeric"] = "alpha_2"
    label: Literal["name", "official_name", "common_name"] = "name"


class IsoCountries(LocalSource):
    kind = "iso_countries"
    source_type = "imported"
    params_model = IsoCountriesParams

    def pairs(self, entry: SourceEntry) -> list[tuple[str, str]]:
        params: IsoCountriesParams = entry.params
        return [
            (getattr(country, params.code), getattr(country, params.label, None) or country.name)
            for country in pycountry.countries
        ]

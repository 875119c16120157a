"""ISO 3166-1 countries from the ``pycountry`` package: a reference list that needs no network.

The list changes only when the installed package's data does: the same package gives the same
content hash, so a re-sync is ``unchanged`` with no version bump. ``url`` is only the reference
address stored with the dataset (e.g. the ISO 3166 page); nothing is fetched from it.
"""

from __future__ import annotations

import json
from typing import Literal

import pycountry

from scrapers.base import Source, SourceEntry, SourceParams
from scrapers.http import Document, HttpClient, Validators
from scrapers.json_api import load_json
from scrapers.normalise import RawOption


class IsoCountriesParams(SourceParams):
    code: Literal["alpha_2", "alpha_3", "numeric"] = "alpha_2"
    label: Literal["name", "official_name", "common_name"] = "name"


class IsoCountries(Source):
    kind = "iso_countries"
    source_type = "imported"
    params_model = IsoCountriesParams

    def fetch(self, entry: SourceEntry, http: HttpClient, validators: Validators | None) -> list[Document]:
        params: IsoCountriesParams = entry.params
        rows = [
            [getattr(country, params.code), getattr(country, params.label, None) or country.name]
            for country in pycountry.countries
        ]
        body = json.dumps(rows, ensure_ascii=False).encode("utf-8")
        return [Document(entry.url, body, "application/json", "utf-8")]

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        return [RawOption(code=code, label=label) for code, label in load_json(documents[0])]

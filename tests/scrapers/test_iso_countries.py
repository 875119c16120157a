"""The iso_countries source: ISO 3166-1 from pycountry, with no network at all."""

from __future__ import annotations

import pycountry
import pytest

from scrapers.http import HttpClient
from scrapers.iso_countries import IsoCountries
from tests.scrapers.sources_helpers import entry, pairs

KIND = "iso_countries"
URL = "https://www.iso.org/iso-3166-country-codes.html"


@pytest.fixture
def http() -> HttpClient:
    """A client pointed nowhere: any request would fail the test."""
    return HttpClient(user_agent="datasync-tests/1.0", connect_timeout=0.01, read_timeout=0.01)


def test_every_country_by_alpha_2(http: HttpClient) -> None:
    source_entry = entry(KIND, URL)
    found = pairs(IsoCountries().parse(source_entry, IsoCountries().fetch(source_entry, http, None)))
    assert len(found) == len(pycountry.countries) > 240
    assert ("GB", "United Kingdom") in found and ("FR", "France") in found


def test_alpha_3_and_official_names_fall_back_to_the_name(http: HttpClient) -> None:
    source_entry = entry(KIND, URL, code="alpha_3", label="official_name")
    found = dict(pairs(IsoCountries().parse(source_entry, IsoCountries().fetch(source_entry, http, None))))
    assert found["GBR"] == "United Kingdom of Great Britain and Northern Ireland"
    assert found["CAN"] == "Canada"  # no official name in the data: the name


def test_the_same_package_gives_the_same_list(http: HttpClient) -> None:
    source_entry = entry(KIND, URL)
    first, second = (IsoCountries().fetch(source_entry, http, None)[0].body for _ in range(2))
    assert first == second

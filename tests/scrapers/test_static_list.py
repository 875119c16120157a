"""The static_list source: options written in the catalogue, in their written order, no network."""

from __future__ import annotations

import pytest

from scrapers.http import HttpClient
from scrapers.static_list import StaticList
from tests.scrapers.sources_helpers import entry, pairs

URL = "https://www.ons.gov.uk/methodology/geography/ukgeographies/administrativegeography"
UK = {"ENG": "England", "NIR": "Northern Ireland", "SCT": "Scotland", "WLS": "Wales"}


@pytest.fixture
def http() -> HttpClient:
    return HttpClient(user_agent="datasync-tests/1.0", connect_timeout=0.01, read_timeout=0.01)


def test_the_options_in_written_order(http: HttpClient) -> None:
    source_entry = entry("static_list", URL, options=UK)
    assert pairs(StaticList().parse(source_entry, StaticList().fetch(source_entry, http, None))) == list(UK.items())


def test_an_empty_list_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 item"):
        StaticList.params_model(options={})

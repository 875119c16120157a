"""The arcgis source against a real local FeatureServer (``tests/api_upstream.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from scrapers.arcgis import ArcGis
from scrapers.errors import PermanentError
from scrapers.http import HttpClient, NotModified, Validators
from tests.api_examples import ARCGIS_SERVICE
from tests.api_examples import LAD_DISTRICTS as DISTRICTS
from tests.api_upstream import ARCGIS_SERVICES, ApiUpstream
from tests.scrapers.sources_helpers import Entry, client, entry, fetch, pairs, rows
from tests.upstream import Scripted

KIND = "arcgis"
SERVICE = ARCGIS_SERVICE
LAYER = f"{ARCGIS_SERVICES}/{SERVICE}/FeatureServer/0"


@pytest.fixture
def http(apis: ApiUpstream) -> Iterator[HttpClient]:
    apis.arcgis.layers[SERVICE] = [dict(row) for row in reversed(DISTRICTS)]
    apis.arcgis.max_record_count = 3
    apis.arcgis.last_edit[SERVICE] = 1706540000000
    http_client = client(apis)
    yield http_client
    http_client.close()


def ag_entry(**params: Any) -> Entry:
    params.setdefault("code_field", "LAD23CD")
    params.setdefault("label_field", "LAD23NM")
    return entry(KIND, f"{LAYER}/query", **params)


def test_pages_while_exceeded_transfer_limit(apis: ApiUpstream, http: HttpClient) -> None:
    documents = fetch(KIND, ag_entry(), http)
    assert len(documents) == 3  # 7 features, the server caps pages at 3
    offsets = [parse_qs(urlsplit(d.url).query)["resultOffset"][0] for d in documents]
    assert offsets == ["0", "3", "6"]
    found = ArcGis().parse(ag_entry(), documents)
    assert pairs(found) == [(row["LAD23CD"], row["LAD23NM"]) for row in DISTRICTS]


def test_the_query_asks_only_for_the_mapped_fields_without_geometry(apis: ApiUpstream, http: HttpClient) -> None:
    query = parse_qs(urlsplit(fetch(KIND, ag_entry(), http)[0].url).query)
    assert query["outFields"] == ["LAD23CD,LAD23NM"]
    assert query["returnGeometry"] == ["false"]
    assert query["orderByFields"] == ["LAD23CD"]


def test_a_label_template(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = ag_entry(label_field=None, label_template="{LAD23NM} / {LAD23NMW}")
    assert pairs(rows(KIND, source_entry, http))[-2] == ("W06000001", "Isle of Anglesey / Ynys Môn")


def test_an_unedited_layer_downloads_no_features(apis: ApiUpstream, http: HttpClient) -> None:
    token = ArcGis().kept_validators(fetch(KIND, ag_entry(), http)).token
    assert token and token.startswith("1706540000000|")
    queries = len(apis.hits(f"{LAYER}/query"))
    with pytest.raises(NotModified) as caught:
        fetch(KIND, ag_entry(), http, Validators(token=token))
    assert len(apis.hits(f"{LAYER}/query")) == queries
    assert "not edited since" in caught.value.reason


def test_an_edited_layer_is_fetched_again(apis: ApiUpstream, http: HttpClient) -> None:
    token = ArcGis().kept_validators(fetch(KIND, ag_entry(), http)).token
    apis.arcgis.last_edit[SERVICE] += 1
    assert len(fetch(KIND, ag_entry(), http, Validators(token=token))) == 3


def test_an_edited_entry_is_fetched_again(apis: ApiUpstream, http: HttpClient) -> None:
    token = ArcGis().kept_validators(fetch(KIND, ag_entry(), http)).token
    assert len(fetch(KIND, ag_entry(label_field="LAD23NMW"), http, Validators(token=token))) == 3


def test_a_layer_without_edit_info_has_no_token(apis: ApiUpstream, http: HttpClient) -> None:
    del apis.arcgis.last_edit[SERVICE]
    assert ArcGis().kept_validators(fetch(KIND, ag_entry(), http)).token is None


def test_a_missing_field_names_the_fields_there_are(apis: ApiUpstream, http: HttpClient) -> None:
    with pytest.raises(PermanentError) as caught:
        rows(KIND, ag_entry(code_field="LAD24CD"), http)
    assert caught.value.kind == "missing_column"
    assert "no field 'LAD24CD'" in str(caught.value)


def test_an_arcgis_error_object_is_reported(apis: ApiUpstream, http: HttpClient) -> None:
    apis.arcgis.layers.pop(SERVICE)
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, ag_entry(), http)
    assert caught.value.kind == "arcgis_error"
    assert "ArcGIS error 400: Invalid URL" in str(caught.value)


def test_an_empty_page_that_promises_more_is_an_error(apis: ApiUpstream, http: HttpClient) -> None:
    url = f"{LAYER}/query?where=1%3D1&outFields=LAD23CD%2CLAD23NM&orderByFields=LAD23CD&returnGeometry=false"
    apis.script(
        f"{url}&resultOffset=3&resultRecordCount=1000&f=json",
        Scripted(body=b'{"features": [], "exceededTransferLimit": true}'),
    )
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, ag_entry(), http)
    assert caught.value.kind == "short_page"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>Service unavailable</html>", "not valid JSON"),
        (b'{"fields": []}', "no 'features' list"),
        (b'{"features": [{"geometry": {}}]}', "feature 1 has no attributes"),
    ],
)
def test_malformed_pages(apis: ApiUpstream, http: HttpClient, body: bytes, expected: str) -> None:
    url = f"{LAYER}/query?where=1%3D1&outFields=LAD23CD%2CLAD23NM&orderByFields=LAD23CD&returnGeometry=false"
    apis.script(f"{url}&resultOffset=0&resultRecordCount=1000&f=json", Scripted(body=body))
    with pytest.raises(PermanentError) as caught:
        rows(KIND, ag_entry(), http)
    assert expected in str(caught.value)


def test_the_url_is_a_bare_query_endpoint() -> None:
    assert ArcGis().check_url(f"{LAYER}/query?where=1%3D1")
    assert ArcGis().check_url(LAYER)
    assert ArcGis().check_url(f"{LAYER}/query") is None

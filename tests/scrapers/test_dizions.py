"""The dizions source against a real local Charitylog API (``tests/api_upstream.py``, seed 002)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scrapers.dizions import Dizions, DizionsParams
from scrapers.errors import PermanentError
from scrapers.http import HttpClient, NotModified
from tests.api_examples import CHARITYLOG_DISTRICTS as DISTRICTS
from tests.api_upstream import DIZIONS_BASE, ApiUpstream
from tests.scrapers.sources_helpers import Entry, client, entry, fetch, pairs, rows
from tests.upstream import Scripted

KIND = "dizions"
CREDENTIALS = {"Source": "src-key-from-sms-8842", "Org": "org-live-1192", "User": "user-3321"}
HEADERS = {"Source": "CHARITYLOG_SOURCE", "Org": "CHARITYLOG_ORG", "User": "CHARITYLOG_USER"}
PROJECTS = [{"id": 5, "name": "Befriending"}, {"id": 12, "name": "Carers' Support"}, {"id": 31, "name": "Advocacy"}]


@pytest.fixture
def http(apis: ApiUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpClient]:
    apis.charitylog.credentials = dict(CREDENTIALS)
    apis.charitylog.dictionaries = {
        ("organisations", "district"): DISTRICTS,
        ("referrals", "project"): PROJECTS,
        ("contacts", "contact type"): {"7": "Telephone"},
    }
    for header, env in HEADERS.items():
        monkeypatch.setenv(env, CREDENTIALS[header])
    http_client = client(apis)
    yield http_client
    http_client.close()


def dz_entry(group: str = "organisations", table: str = "district", **params: Any) -> Entry:
    params.setdefault("auth_headers", HEADERS)
    return entry(KIND, DIZIONS_BASE, group=group, table=table, **params)


def test_an_id_to_name_object(apis: ApiUpstream, http: HttpClient) -> None:
    assert pairs(rows(KIND, dz_entry(), http)) == list(DISTRICTS.items())
    (method, headers), *_ = apis.hits(f"{DIZIONS_BASE}/dictionary/organisations/district")
    assert method == "GET"
    assert {name: headers[name] for name in CREDENTIALS} == CREDENTIALS


def test_a_list_of_id_and_name_objects_gives_string_ids(apis: ApiUpstream, http: HttpClient) -> None:
    assert pairs(rows(KIND, dz_entry("referrals", "project"), http)) == [
        ("5", "Befriending"),
        ("12", "Carers' Support"),
        ("31", "Advocacy"),
    ]


def test_path_segments_are_percent_encoded(apis: ApiUpstream, http: HttpClient) -> None:
    documents = fetch(KIND, dz_entry("contacts", "contact type"), http)
    assert documents[0].url == f"{DIZIONS_BASE}/dictionary/contacts/contact%20type"
    assert pairs(Dizions().parse(dz_entry("contacts", "contact type"), documents)) == [("7", "Telephone")]


def test_an_unchanged_dictionary_answers_304(apis: ApiUpstream, http: HttpClient) -> None:
    documents = fetch(KIND, dz_entry(), http)
    validators = Dizions().kept_validators(documents)
    assert validators.etag
    with pytest.raises(NotModified):
        fetch(KIND, dz_entry(), http, validators)


def test_refused_credentials_name_the_headers_and_variables_not_values(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARITYLOG_ORG", "org-training-0001")  # the training system's Org key
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dz_entry(), http)
    assert caught.value.kind == "access_denied"
    message = str(caught.value)
    assert "Source (from CHARITYLOG_SOURCE), Org (from CHARITYLOG_ORG), User (from CHARITYLOG_USER)" in message
    assert not any(value in message for value in [*CREDENTIALS.values(), "org-training-0001"])


def test_a_missing_credential_variable_is_named(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHARITYLOG_USER")
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dz_entry(), http)
    assert caught.value.kind == "missing_credentials"
    assert "CHARITYLOG_USER" in str(caught.value)
    assert not apis.hits(DIZIONS_BASE)


def test_a_bearer_gateway_is_just_another_header_set(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    apis.charitylog.credentials = {"Authorization": "Bearer gw-token-55"}
    monkeypatch.setenv("CHARITYLOG_GATEWAY", "Bearer gw-token-55")
    source_entry = dz_entry(auth_headers={"Authorization": "CHARITYLOG_GATEWAY"})
    assert len(rows(KIND, source_entry, http)) == 4
    assert Dizions().secrets(source_entry) == ["Bearer gw-token-55"]


def test_an_unknown_dictionary_is_its_own_error(apis: ApiUpstream, http: HttpClient) -> None:
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dz_entry("referrals", "nope"), http)
    assert caught.value.kind == "unknown_dictionary"
    assert "/dictionary/referrals/nope" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>Maintenance</html>", "not valid JSON"),
        (b'{"error": {"code": 7}}', "expected a dictionary"),
        (b'[{"id": 1, "label": "x"}]', "item 1 has no 'id' and 'name'"),
        (b"{}", "an object with keys (none)"),
    ],
)
def test_malformed_dictionaries(apis: ApiUpstream, http: HttpClient, body: bytes, expected: str) -> None:
    apis.script(f"{DIZIONS_BASE}/dictionary/organisations/district", Scripted(body=body))
    with pytest.raises(PermanentError) as caught:
        rows(KIND, dz_entry(), http)
    assert expected in str(caught.value)
    assert f"{DIZIONS_BASE}/dictionary/organisations/district" in str(caught.value)


def test_secrets_are_every_credential_value(http: HttpClient) -> None:
    assert sorted(Dizions().secrets(dz_entry())) == sorted(CREDENTIALS.values())


@pytest.mark.parametrize(
    ("headers", "problem"),
    [({"Source": "src-key-from-sms-8842"}, "never put the value here"), ({"Bad Header": "X"}, "not an HTTP header")],
)
def test_auth_headers_map_header_names_to_variable_names(headers: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        DizionsParams(group="g", table="t", auth_headers=headers)

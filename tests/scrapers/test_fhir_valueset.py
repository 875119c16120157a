"""The fhir_valueset source against a real local FHIR terminology server (``tests/api_upstream.py``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from scrapers.errors import PermanentError, TransientError
from scrapers.fhir_valueset import FhirValueSet
from scrapers.http import HttpClient, NotModified, Validators
from scrapers.oauth import ClientCredentials
from tests.api_examples import ENGLAND, ETHNIC, SMOKING
from tests.api_upstream import FHIR_BASE, TOKEN_URL, ApiUpstream
from tests.scrapers.sources_helpers import Entry, client, entry, fetch, pairs, rows
from tests.upstream import Scripted

KIND = "fhir_valueset"


def expand_url(value_set: dict[str, Any]) -> str:
    return f"{FHIR_BASE}/ValueSet/$expand?url={quote(value_set['url'], safe='')}"


def fhir_entry(value_set: dict[str, Any], **params: Any) -> Entry:
    return entry(KIND, expand_url(value_set), **params)


def with_credentials(monkeypatch: pytest.MonkeyPatch, apis: ApiUpstream) -> dict[str, Any]:
    apis.fhir.clients["datasync-s2s"] = "client-secret-value-123"
    monkeypatch.setenv("NHS_TS_CLIENT_ID", "datasync-s2s")
    monkeypatch.setenv("NHS_TS_CLIENT_SECRET", "client-secret-value-123")
    return {"token_url": TOKEN_URL, "client_id_env": "NHS_TS_CLIENT_ID", "client_secret_env": "NHS_TS_CLIENT_SECRET"}


@pytest.fixture
def http(apis: ApiUpstream) -> Iterator[HttpClient]:
    apis.fhir.value_sets = {ETHNIC["url"]: copy.deepcopy(ETHNIC), SMOKING["url"]: copy.deepcopy(SMOKING)}
    http_client = client(apis)
    yield http_client
    http_client.close()


@pytest.fixture(autouse=True)
def _fresh_tokens() -> Iterator[None]:
    """Tokens are cached per process; each test starts with none."""
    credentials = ClientCredentials(TOKEN_URL, "NHS_TS_CLIENT_ID", "NHS_TS_CLIENT_SECRET")
    credentials.forget()
    yield
    credentials.forget()


def test_smoking_status_pages_through_the_expansion(apis: ApiUpstream, http: HttpClient) -> None:
    documents = fetch(KIND, fhir_entry(SMOKING, page_size=3), http)
    assert len(documents) == 3
    assert [d.url.rsplit("&", 2)[1:] for d in documents] == [
        ["count=3", "offset=0"],
        ["count=3", "offset=3"],
        ["count=3", "offset=6"],
    ]
    found = FhirValueSet().parse(fhir_entry(SMOKING, page_size=3), documents)
    assert pairs(found) == [(c["code"], c["display"]) for c in SMOKING["expansion"]["contains"]]
    assert ("77176002", "Smoker") in pairs(found)


def test_a_value_set_holding_a_code_in_two_systems_needs_system(apis: ApiUpstream, http: HttpClient) -> None:
    with pytest.raises(PermanentError) as caught:
        rows(KIND, fhir_entry(ETHNIC), http)
    assert caught.value.kind == "mixed_systems"
    assert "UKCore-EthnicCategoryEngland" in str(caught.value) and "UKCore-EthnicCategoryWales" in str(caught.value)
    assert "set system" in str(caught.value)


def test_system_picks_the_england_codes(apis: ApiUpstream, http: HttpClient) -> None:
    found = pairs(rows(KIND, fhir_entry(ETHNIC, system=ENGLAND, page_size=10), http))
    assert len(found) == 18
    assert ("A", "White - British") in found and ("99", "Not known") in found and ("Z", "Not stated") in found
    assert ("T", "Arab") not in found  # a Welsh-only code


def test_system_that_matches_nothing_lists_the_systems(apis: ApiUpstream, http: HttpClient) -> None:
    with pytest.raises(PermanentError) as caught:
        rows(KIND, fhir_entry(ETHNIC, system="http://snomed.info/sct"), http)
    assert caught.value.kind == "no_concepts"
    assert ENGLAND in str(caught.value)


def test_inactive_concepts_are_kept_and_marked_retired(apis: ApiUpstream, http: HttpClient) -> None:
    apis.fhir.value_sets[SMOKING["url"]]["expansion"]["contains"][6]["inactive"] = True
    found = rows(KIND, fhir_entry(SMOKING), http)
    assert [row.code for row in found if row.retired] == ["230063004"]
    assert len(found) == 8


def test_abstract_concepts_are_left_out_and_nested_ones_flattened(apis: ApiUpstream, http: HttpClient) -> None:
    contains = apis.fhir.value_sets[SMOKING["url"]]["expansion"]["contains"]
    contains[0] = {"system": "http://snomed.info/sct", "code": "365981007", "display": "Tobacco smoking behavior",
                   "abstract": True, "contains": [contains[0]]}  # fmt: skip
    found = rows(KIND, fhir_entry(SMOKING), http)
    assert [row.code for row in found][:2] == ["449868002", "428041000124106"]
    assert "365981007" not in [row.code for row in found]


def test_a_short_page_before_the_total_is_an_error(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = fhir_entry(SMOKING, page_size=3)
    page = json.loads(json.dumps(apis.fhir.value_sets[SMOKING["url"]]))
    page["expansion"].update(offset=3, total=8, contains=page["expansion"]["contains"][3:5])
    apis.script(f"{source_entry.url}&count=3&offset=3", Scripted(body=json.dumps(page).encode()))
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, source_entry, http)
    assert caught.value.kind == "short_page"
    assert "offset=3" in str(caught.value) and "of 8" in str(caught.value)


def test_a_total_that_moves_between_pages_is_retried_later(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = fhir_entry(SMOKING, page_size=4)
    page = json.loads(json.dumps(apis.fhir.value_sets[SMOKING["url"]]))
    page["expansion"].update(offset=4, total=9, contains=page["expansion"]["contains"][4:8])
    apis.script(f"{source_entry.url}&count=4&offset=4", Scripted(body=json.dumps(page).encode()))
    with pytest.raises(TransientError) as caught:
        fetch(KIND, source_entry, http)
    assert caught.value.kind == "expansion_changed"


def test_a_page_at_the_wrong_offset_is_an_error(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = fhir_entry(SMOKING, page_size=4)
    page = json.loads(json.dumps(apis.fhir.value_sets[SMOKING["url"]]))
    page["expansion"].update(offset=0, total=8, contains=page["expansion"]["contains"][0:4])
    apis.script(f"{source_entry.url}&count=4&offset=4", Scripted(body=json.dumps(page).encode()))
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, source_entry, http)
    assert caught.value.kind == "bad_page"
    assert "offset 4" in str(caught.value)


def test_an_unknown_value_set_gives_the_operation_outcome_text(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = entry(KIND, f"{FHIR_BASE}/ValueSet/$expand?url=https://example.org/ValueSet/nope")
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, source_entry, http)
    assert caught.value.kind == "http_404"
    assert "OperationOutcome: error not-found: Unable to find value set https://example.org/ValueSet/nope" in str(
        caught.value
    )


def test_an_operation_outcome_with_status_200_is_an_error(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = fhir_entry(SMOKING)
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "too-costly",
               "details": {"text": "Expansion exceeds 10000 concepts"}}]}  # fmt: skip
    apis.script(f"{source_entry.url}&count=1000&offset=0", Scripted(body=json.dumps(outcome).encode()))
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, source_entry, http)
    assert caught.value.kind == "operation_outcome"
    assert "too-costly: Expansion exceeds 10000 concepts" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"resourceType": "Bundle", "entry": []}', "expected a FHIR ValueSet, got Bundle"),
        (b"<html><body>Sign in</body></html>", "not valid JSON"),
        (b'{"resourceType": "ValueSet", "url": "x"}', "the ValueSet has no expansion"),
        (b'{"resourceType": "ValueSet", "expansion": {"contains": []}}', "no expansion.total"),
    ],
)
def test_a_response_that_is_not_an_expansion_names_what_is_missing(
    apis: ApiUpstream, http: HttpClient, body: bytes, expected: str
) -> None:
    source_entry = fhir_entry(SMOKING)
    apis.script(f"{source_entry.url}&count=1000&offset=0", Scripted(body=body))
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, source_entry, http)
    assert expected in str(caught.value)
    assert source_entry.url in str(caught.value)


def test_a_concept_without_display_is_an_error(apis: ApiUpstream, http: HttpClient) -> None:
    del apis.fhir.value_sets[SMOKING["url"]]["expansion"]["contains"][2]["display"]
    with pytest.raises(PermanentError) as caught:
        rows(KIND, fhir_entry(SMOKING), http)
    assert caught.value.kind == "missing_field"
    assert "'8517006' has no display" in str(caught.value)


def test_oauth_token_is_fetched_once_and_reused(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_entry = fhir_entry(SMOKING, page_size=3, **with_credentials(monkeypatch, apis))
    assert len(rows(KIND, source_entry, http)) == 8
    assert len(rows(KIND, source_entry, http)) == 8
    assert apis.fhir.token_requests == 1
    expands = apis.hits(f"{FHIR_BASE}/ValueSet/$expand")
    assert len(expands) == 6 and all(h["Authorization"].startswith("Bearer ") for _, h in expands)


def test_a_401_renews_the_token_once(apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    source_entry = fhir_entry(SMOKING, **with_credentials(monkeypatch, apis))
    rows(KIND, source_entry, http)
    apis.fhir.revoke_tokens()  # the server forgot the token before its expiry
    assert len(rows(KIND, source_entry, http)) == 8
    assert apis.fhir.token_requests == 2


def test_an_expired_token_is_renewed_before_use(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    apis.fhir.token_lifetime = 10  # inside the expiry margin: never reused
    source_entry = fhir_entry(SMOKING, page_size=4, **with_credentials(monkeypatch, apis))
    assert len(rows(KIND, source_entry, http)) == 8
    assert apis.fhir.token_requests == 2
    assert len(apis.hits(f"{FHIR_BASE}/ValueSet/$expand")) == 2


def test_a_token_refused_twice_names_the_credentials(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_entry = fhir_entry(SMOKING, **with_credentials(monkeypatch, apis))
    apis.script(
        f"{source_entry.url}&count=1000&offset=0",
        *[Scripted(status=401, body=b'{"resourceType": "OperationOutcome", "issue": []}')] * 2,
    )
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, source_entry, http)
    assert caught.value.kind == "http_401"
    assert "NHS_TS_CLIENT_ID" in str(caught.value) and TOKEN_URL in str(caught.value)
    assert apis.fhir.token_requests == 2


def test_wrong_client_secret_is_a_clear_error(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = with_credentials(monkeypatch, apis)
    monkeypatch.setenv("NHS_TS_CLIENT_SECRET", "wrong-secret-456")
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, fhir_entry(SMOKING, **params), http)
    assert caught.value.kind == "auth_refused"
    assert "NHS_TS_CLIENT_ID / NHS_TS_CLIENT_SECRET" in str(caught.value)
    assert "wrong-secret-456" not in str(caught.value)


def test_an_unset_credential_variable_is_named(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = with_credentials(monkeypatch, apis)
    monkeypatch.delenv("NHS_TS_CLIENT_SECRET")
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, fhir_entry(SMOKING, **params), http)
    assert caught.value.kind == "missing_credentials"
    assert "NHS_TS_CLIENT_SECRET is not set" in str(caught.value)


def test_a_server_that_wants_a_token_says_so(apis: ApiUpstream, http: HttpClient) -> None:
    apis.fhir.clients["someone"] = "else"
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, fhir_entry(SMOKING), http)
    assert caught.value.kind == "http_401"
    assert "set token_url, client_id_env and client_secret_env" in str(caught.value)


def test_secrets_include_the_client_secret_and_the_token(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_entry = fhir_entry(SMOKING, **with_credentials(monkeypatch, apis))
    rows(KIND, source_entry, http)
    token = apis.hits(f"{FHIR_BASE}/ValueSet/$expand")[0][1]["Authorization"].removeprefix("Bearer ")
    assert {"client-secret-value-123", token} <= set(FhirValueSet().secrets(source_entry))


def test_an_unchanged_expansion_costs_one_empty_page(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = fhir_entry(SMOKING, page_size=3)
    token = FhirValueSet().kept_validators(fetch(KIND, source_entry, http)).token
    assert token
    before = len(apis.hits(f"{FHIR_BASE}/ValueSet/$expand"))
    with pytest.raises(NotModified) as caught:
        fetch(KIND, source_entry, http, Validators(token=token))
    probes = apis.hits(f"{FHIR_BASE}/ValueSet/$expand")[before:]
    assert len(probes) == 1
    assert "unchanged" in caught.value.reason


def test_a_new_value_set_version_is_fetched_in_full(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = fhir_entry(SMOKING, page_size=3)
    token = FhirValueSet().kept_validators(fetch(KIND, source_entry, http)).token
    apis.fhir.value_sets[SMOKING["url"]]["version"] = "1.2.0"
    documents = fetch(KIND, source_entry, http, Validators(token=token))
    assert len(documents) == 3
    assert FhirValueSet().kept_validators(documents).token not in (None, token)


def test_a_new_system_filter_is_fetched_in_full(apis: ApiUpstream, http: HttpClient) -> None:
    """The token belongs to the entry too: editing the entry never leaves the old list in place."""
    token = FhirValueSet().kept_validators(fetch(KIND, fhir_entry(ETHNIC, system=ENGLAND), http)).token
    wales = "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategoryWales"
    documents = fetch(KIND, fhir_entry(ETHNIC, system=wales), http, Validators(token=token))
    assert ("T", "Arab") in pairs(FhirValueSet().parse(fhir_entry(ETHNIC, system=wales), documents))


def test_without_version_or_identifier_there_is_no_token(apis: ApiUpstream, http: HttpClient) -> None:
    value_set = apis.fhir.value_sets[SMOKING["url"]]
    del value_set["version"], value_set["expansion"]["identifier"]
    assert FhirValueSet().kept_validators(fetch(KIND, fhir_entry(SMOKING), http)).token is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"{FHIR_BASE}/ValueSet/UKCore-EthnicCategory", "must be a FHIR expansion URL"),
        (f"{FHIR_BASE}/ValueSet/$expand?url=x&count=10", "must not set count or offset"),
    ],
)
def test_urls_that_are_not_expansions_are_refused(url: str, problem: str) -> None:
    assert problem in (FhirValueSet().check_url(url) or "")


def test_credentials_go_together() -> None:
    with pytest.raises(ValueError, match="set all three or none"):
        FhirValueSet.params_model(token_url=TOKEN_URL, client_id_env="X")

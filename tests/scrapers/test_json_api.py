"""The json_api source against a real local HTTP upstream serving JSON files from ``tmp_path``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scrapers.errors import PermanentError, TransientError
from scrapers.http import HttpClient, NotModified, UrlRewrites, Validators, host_of
from scrapers.json_api import JsonApi, JsonApiParams
from scrapers.normalise import RawOption, normalise
from tests.upstream import Scripted, Upstream, drf_pages, ended_early, looping

API = "https://api.rcpch.ac.uk/nhs-organisations/v1"
SOURCE = JsonApi()


@dataclass
class Entry:
    key: str
    url: str
    allowed_hosts: frozenset[str]
    params: Any


def entry(url: str, **params: Any) -> Entry:
    params.setdefault("code_field", "ods_code")
    params.setdefault("label_field", "name")
    return Entry("test_list", url, frozenset({host_of(url)}), JsonApiParams(**params))


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("upstream")


@pytest.fixture(scope="module")
def server(shared_root: Path) -> Iterator[Upstream]:
    """One server for the module (stopping one takes half a second); tests use their own routes."""
    with Upstream(root=shared_root) as upstream:
        yield upstream


@pytest.fixture
def root(shared_root: Path, server: Upstream) -> Path:
    return shared_root


@pytest.fixture
def api(request: pytest.FixtureRequest) -> str:
    """A route prefix no other test uses."""
    return f"{API}/{re.sub(r'[^A-Za-z0-9_]+', '_', request.node.name)}"


@pytest.fixture
def http(server: Upstream) -> Iterator[HttpClient]:
    client = HttpClient(user_agent="datasync-tests/1.0", rewrites=UrlRewrites(server.rewrites()))
    yield client
    client.close()


def publish(root: Path, url: str, payload: Any, *, page: int = 1, raw: bytes | None = None) -> None:
    """Write the file the upstream serves for ``url`` (a directory URL ending in ``/``)."""
    assert url.startswith("https://") and url.endswith("/")
    directory = root / url.removeprefix("https://")
    directory.mkdir(parents=True, exist_ok=True)
    name = "index.json" if page == 1 else f"index.page-{page}.json"
    (directory / name).write_bytes(raw if raw is not None else json.dumps(payload).encode("utf-8"))


def sync(source_entry: Entry, http: HttpClient) -> list[RawOption]:
    return SOURCE.parse(source_entry, SOURCE.fetch(source_entry, http, None))


def pairs(rows: list[RawOption]) -> list[tuple[str, str]]:
    return [(r.code, r.label) for r in rows]


def test_plain_list(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/trusts/"
    publish(
        root,
        url,
        [
            {"ods_code": "RJZ", "name": "King's College Hospital"},
            {"ods_code": "R1H", "name": "Barts Health", "active": True},
            {"ods_code": "07L", "name": "Leading zero"},
        ],
    )
    rows = sync(entry(url), http)
    assert pairs(rows) == [("RJZ", "King's College Hospital"), ("R1H", "Barts Health"), ("07L", "Leading zero")]
    assert len(server.hits(url)) == 1
    assert server.hits(url)[0].get("Accept") == "application/json"


def test_drf_pagination_is_followed_through_the_rewrites(
    api: str, root: Path, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/organisations/limited/"
    pages = [[{"ods_code": f"P{page}{i}", "name": f"Org {page}.{i}"} for i in range(3)] for page in (1, 2, 3)]
    for number, results in enumerate(pages, start=1):
        publish(
            root,
            url,
            {
                "count": 9,
                "next": f"{url}?page={number + 1}" if number < 3 else None,
                "previous": None if number == 1 else (url if number == 2 else f"{url}?page={number - 1}"),
                "results": results,
            },
            page=number,
        )
    source_entry = entry(url)
    documents = SOURCE.fetch(source_entry, http, None)
    assert [d.url for d in documents] == [url, f"{url}?page=2", f"{url}?page=3"]
    rows = SOURCE.parse(source_entry, documents)
    assert [r.code for r in rows] == [f"P{page}{i}" for page in (1, 2, 3) for i in range(3)]
    assert [len(server.hits(u)) for u in (url, f"{url}?page=2", f"{url}?page=3")] == [1, 1, 1]


def test_drf_page_without_next_is_one_page(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/regions/"
    publish(root, url, {"count": 1, "next": None, "previous": None, "results": [{"ods_code": "Y56", "name": "London"}]})
    assert pairs(sync(entry(url), http)) == [("Y56", "London")]


def test_a_next_link_to_another_host_is_refused(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/offsite/"
    publish(root, url, {"next": "https://evil.example.com/steal?page=2", "results": [{"ods_code": "A", "name": "a"}]})
    with pytest.raises(PermanentError) as caught:
        SOURCE.fetch(entry(url), http, None)
    assert caught.value.kind == "redirect"
    assert "evil.example.com" in str(caught.value)


def test_pagination_stops_at_max_pages(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/endless/"
    for number in (1, 2, 3):
        publish(
            root,
            url,
            {"next": f"{url}?page={number + 1}", "results": [{"ods_code": str(number), "name": "x"}]},
            page=number,
        )
    with pytest.raises(PermanentError) as caught:
        SOURCE.fetch(entry(url, max_pages=2), http, None)
    assert caught.value.kind == "too_many_pages"
    assert url in str(caught.value)


def test_children_are_flattened_after_their_parent(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/local_health_boards/organisations/"
    publish(
        root,
        url,
        [
            {
                "ods_code": "7A1",
                "name": "Betsi Cadwaladr",
                "organisations": [
                    {"ods_code": "7A1A1", "name": "Ysbyty Gwynedd"},
                    {"ods_code": "7A1A4", "name": "Wrexham Maelor"},
                ],
            },
            {"ods_code": "7A2", "name": "Hywel Dda", "organisations": []},
            {"ods_code": "7A3", "name": "Swansea Bay", "organisations": [{"ods_code": "7A3B7", "name": "Morriston"}]},
            {"ods_code": "7A4", "name": "Cardiff and Vale"},
        ],
    )
    rows = sync(entry(url, children_field="organisations"), http)
    assert [r.code for r in rows] == ["7A1", "7A1A1", "7A1A4", "7A2", "7A3", "7A3B7", "7A4"]


def test_nested_lists_are_not_options_without_children_field(
    api: str, root: Path, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/integrated_care_boards/organisations/"
    publish(root, url, [{"ods_code": "QE1", "name": "ICB 1", "organisations": [{"ods_code": "X", "name": "x"}]}])
    assert pairs(sync(entry(url), http)) == [("QE1", "ICB 1")]


def test_children_field_that_is_not_a_list_is_unexpected_shape(
    api: str, root: Path, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/bad_children/"
    publish(root, url, [{"ods_code": "7A1", "name": "Board", "organisations": {"ods_code": "X"}}])
    with pytest.raises(PermanentError) as caught:
        sync(entry(url, children_field="organisations"), http)
    assert caught.value.kind == "unexpected_shape"
    assert "item 1" in str(caught.value)


def test_code_field_list_falls_back_and_label_default_fills_in(
    api: str, root: Path, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/paediatric_diabetes_units/parent/"
    publish(
        root,
        url,
        [
            {"pz_code": "PZ085", "parent": {"ods_code": "RJZ", "name": "King's College Hospital"}},
            {"pz_code": "PZ248", "parent": None},
            {"pz_code": "PZ999", "parent": {"ods_code": "", "name": ""}},
            {"pz_code": "PZ011", "parent": {"ods_code": "7A1", "name": None}},
        ],
    )
    source_entry = entry(
        url, code_field=["parent.ods_code", "pz_code"], label_field=["parent.name"], label_default="PDU {pz_code}"
    )
    assert pairs(sync(source_entry, http)) == [
        ("RJZ", "King's College Hospital"),
        ("PZ248", "PDU PZ248"),
        ("PZ999", "PDU PZ999"),
        ("7A1", "PDU PZ011"),
    ]


def test_non_string_codes_become_strings(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/numeric/"
    publish(root, url, [{"id": 7, "name": "Seven"}, {"id": 0, "name": "Zero"}])
    assert pairs(sync(entry(url, code_field="id"), http)) == [("7", "Seven"), ("0", "Zero")]


def test_label_default_with_an_unknown_placeholder_is_missing_field(
    api: str, root: Path, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/bad_default/"
    publish(root, url, [{"ods_code": "A"}])
    with pytest.raises(PermanentError) as caught:
        sync(entry(url, label_default="PDU {pz_code}"), http)
    assert caught.value.kind == "missing_field"
    assert "pz_code" in str(caught.value)


def test_api_key_header_is_sent_when_the_variable_is_set(
    api: str, root: Path, server: Upstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{api}/keyed/"
    publish(root, url, {"next": f"{url}?page=2", "results": [{"ods_code": "A", "name": "a"}]})
    publish(root, url, {"next": None, "results": [{"ods_code": "B", "name": "b"}]}, page=2)
    monkeypatch.setenv("TEST_RCPCH_KEY", "s3cr3t-key-value")
    source_entry = entry(url, api_key_env="TEST_RCPCH_KEY", api_key_header="Ocp-Apim-Subscription-Key")
    assert [r.code for r in sync(source_entry, http)] == ["A", "B"]
    for page_url in (url, f"{url}?page=2"):
        [headers] = server.hits(page_url)
        assert headers.get("Ocp-Apim-Subscription-Key") == "s3cr3t-key-value"
    assert SOURCE.secrets(source_entry) == ["s3cr3t-key-value"]


def test_no_api_key_header_when_the_variable_is_unset(
    api: str, root: Path, server: Upstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{api}/unkeyed/"
    publish(root, url, [{"ods_code": "A", "name": "a"}])
    monkeypatch.delenv("TEST_RCPCH_KEY", raising=False)
    source_entry = entry(url, api_key_env="TEST_RCPCH_KEY", api_key_header="Ocp-Apim-Subscription-Key")
    sync(source_entry, http)
    [headers] = server.hits(url)
    assert not any(name.lower() == "ocp-apim-subscription-key" for name in headers)
    assert SOURCE.secrets(source_entry) == []


def keyed_entry(root: Path, url: str, monkeypatch: pytest.MonkeyPatch, key: str) -> Entry:
    """A one-item list behind an API key read from TEST_RCPCH_KEY."""
    publish(root, url, [{"ods_code": "A", "name": "a"}])
    monkeypatch.setenv("TEST_RCPCH_KEY", key)
    return entry(url, api_key_env="TEST_RCPCH_KEY", api_key_header="Ocp-Apim-Subscription-Key")


def test_empty_api_key_variable_sends_no_header(
    api: str, root: Path, server: Upstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{api}/empty_key/"
    source_entry = keyed_entry(root, url, monkeypatch, "")
    sync(source_entry, http)
    [headers] = server.hits(url)
    assert not any(name.lower() == "ocp-apim-subscription-key" for name in headers)
    assert SOURCE.secrets(source_entry) == []


def test_first_page_is_conditional(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/conditional/"
    publish(root, url, [{"ods_code": "A", "name": "a"}])
    source_entry = entry(url)
    [document] = SOURCE.fetch(source_entry, http, None)
    assert document.validators.etag
    with pytest.raises(NotModified):
        SOURCE.fetch(source_entry, http, Validators(etag=document.validators.etag))
    assert server.hits(url)[-1].get("If-None-Match") == document.validators.etag


@pytest.mark.parametrize(
    "payload",
    [{"detail": "Not a list"}, {"results": {"a": 1}}, "just a string", 42, None],
    ids=["object", "results-object", "string", "number", "null"],
)
def test_a_body_that_is_not_a_list_is_unexpected_shape(
    api: str, root: Path, server: Upstream, http: HttpClient, payload: Any
) -> None:
    url = f"{api}/shape/"
    publish(root, url, payload)
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "unexpected_shape"
    assert url in str(caught.value)


def test_an_item_that_is_not_an_object_is_unexpected_shape(
    api: str, root: Path, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/scalars/"
    publish(root, url, [{"ods_code": "A", "name": "a"}, "B"])
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "unexpected_shape"
    assert "item 2" in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"<html><body>Service unavailable</body></html>", b"", b'[{"ods_code": "A",}]'],
    ids=["broken", "html", "empty", "trailing-comma"],
)
def test_invalid_json_is_bad_json(api: str, root: Path, server: Upstream, http: HttpClient, raw: bytes) -> None:
    url = f"{api}/broken/"
    publish(root, url, None, raw=raw)
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "bad_json"
    assert url in str(caught.value)


def test_a_binary_body_is_garbage(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/binary/"
    publish(root, url, None, raw=b"\x00\x01\x02\xff" * 50)
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "garbage"


def test_an_item_missing_its_code_names_the_item_position(
    api: str, root: Path, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/missing/"
    publish(
        root,
        url,
        [
            {"ods_code": "A", "name": "a"},
            {"ods_code": "B", "name": "b"},
            {"name": "no code here"},
            {"ods_code": "D", "name": "d"},
        ],
    )
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "missing_field"
    assert "item 3" in str(caught.value)
    assert "ods_code" in str(caught.value)
    assert url in str(caught.value)


def test_a_child_missing_its_code_names_parent_and_child(
    api: str, root: Path, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/missing_child/"
    publish(
        root, url, [{"ods_code": "A", "name": "a", "organisations": [{"ods_code": "A1", "name": "x"}, {"name": "y"}]}]
    )
    with pytest.raises(PermanentError) as caught:
        sync(entry(url, children_field="organisations"), http)
    assert caught.value.kind == "missing_field"
    assert "item 1 child 2" in str(caught.value)


def test_an_item_missing_its_label_is_missing_field(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/nolabel/"
    publish(root, url, [{"ods_code": "A", "name": ""}])
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "missing_field"
    assert "item 1" in str(caught.value) and "name" in str(caught.value)


def test_upstream_error_status_surfaces(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/gone/"
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "http_404"


def test_a_later_page_failing_fails_the_fetch(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/flaky/"
    publish(root, url, {"next": f"{url}?page=2", "results": [{"ods_code": "A", "name": "a"}]})
    publish(root, url, {"next": None, "results": [{"ods_code": "B", "name": "b"}]}, page=2)
    server.script(f"{url}?page=2", Scripted(status=503, headers={"Retry-After": "3"}))
    with pytest.raises(TransientError) as caught:
        SOURCE.fetch(entry(url), http, None)
    assert caught.value.kind == "http_503" and caught.value.retry_after == 3.0
    assert f"{url}?page=2" in str(caught.value)


def test_rows_normalise_like_the_fixture_contract(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/whitespace/"
    publish(
        root,
        url,
        [
            {"ods_code": "RTD ", "name": "  The Newcastle  upon Tyne "},
            {"ods_code": "RWH01", "name": "Lister Hospital"},
            {"ods_code": "RWH01", "name": "LISTER HOSPITAL"},
        ],
    )
    result = normalise(sync(entry(url), http))
    assert list(result.options.items()) == [("RTD", "The Newcastle upon Tyne"), ("RWH01", "Lister Hospital")]
    assert len(result.warnings) == 1 and "RWH01" in result.warnings[0]


def orgs(count: int) -> list[dict[str, str]]:
    return [{"ods_code": f"R{i:03d}", "name": f"Organisation {i}"} for i in range(count)]


def test_a_page_that_ends_early_is_incomplete(api: str, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/ends_early/"
    server.serve_pages(url, ended_early(drf_pages(url, orgs(35), 10), after=1))
    with pytest.raises(TransientError) as caught:
        SOURCE.fetch(entry(url), http, None)
    assert caught.value.kind == "incomplete"
    assert f"{url}?page=2" in str(caught.value) and "empty page" in str(caught.value)


def test_pages_that_hold_fewer_items_than_the_count_are_incomplete(
    api: str, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/short/"
    pages = drf_pages(url, orgs(35), 10)
    pages[1]["next"] = None  # page 2 is the last one offered: 20 of 35 items
    server.serve_pages(url, pages[:2])
    with pytest.raises(TransientError) as caught:
        SOURCE.fetch(entry(url), http, None)
    assert caught.value.kind == "incomplete"
    assert "counts 35 items, but the pages held 20" in str(caught.value)


def test_a_next_link_back_to_a_fetched_page_is_a_loop(api: str, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/self_loop/"
    server.serve_pages(url, looping(drf_pages(url, orgs(35), 10), at=2, url=url))
    with pytest.raises(PermanentError) as caught:
        SOURCE.fetch(entry(url), http, None)
    assert caught.value.kind == "page_loop"
    assert [len(server.hits(u)) for u in (url, f"{url}?page=2")] == [1, 1]


def test_a_loop_back_to_the_first_page_is_caught_too(api: str, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/loop_to_first/"
    pages = drf_pages(url, orgs(20), 10)
    pages[1]["next"] = url
    server.serve_pages(url, pages)
    with pytest.raises(PermanentError) as caught:
        SOURCE.fetch(entry(url), http, None)
    assert caught.value.kind == "page_loop" and len(server.hits(url)) == 1


def test_complete_pages_agree_with_their_count(api: str, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/complete/"
    server.serve_pages(url, drf_pages(url, orgs(35), 10))
    assert len(sync(entry(url), http)) == 35


@pytest.mark.parametrize(
    "code, shown",
    [(True, "boolean (true)"), (False, "boolean (false)"), ({"a": 1}, 'object ({"a": 1})'), ([1, 2], "array ([1, 2])")],
    ids=["true", "false", "object", "array"],
)
def test_a_code_that_is_not_a_string_or_number_names_the_item(
    api: str, root: Path, server: Upstream, http: HttpClient, code: Any, shown: str
) -> None:
    url = f"{api}/typed/"
    publish(root, url, [{"ods_code": "A", "name": "a"}, {"ods_code": code, "name": "b"}])
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "bad_value"
    assert f"{url} item 2: the code is a JSON {shown}" in str(caught.value)


def test_a_label_that_is_a_boolean_names_the_item(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/typed_label/"
    publish(root, url, [{"ods_code": "A", "name": True}])
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "bad_value" and "item 1: the label is a JSON boolean" in str(caught.value)


def test_a_null_code_with_no_fallback_is_missing_field(
    api: str, root: Path, server: Upstream, http: HttpClient
) -> None:
    url = f"{api}/null_code/"
    publish(root, url, [{"ods_code": None, "name": "a"}])
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == "missing_field" and "item 1" in str(caught.value)


def test_numeric_codes_keep_their_json_text(api: str, root: Path, server: Upstream, http: HttpClient) -> None:
    url = f"{api}/numbers/"
    publish(root, url, None, raw=b'[{"id": 12, "name": "Twelve"}, {"id": 1.5, "name": "One and a half"}]')
    assert pairs(sync(entry(url, code_field="id"), http)) == [("12", "Twelve"), ("1.5", "One and a half")]


@pytest.mark.parametrize(
    "raw, kind",
    [
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (b'{"x": ' * 50_000 + b"1" + b"}" * 50_000, "too_deep"),
        (b'[{"ods_code": "A", "name": "a", "hectares": 1e400}]', "bad_number"),
        (b'[{"ods_code": "A", "name": "a", "hectares": ' + b"9" * 5000 + b"}]", "bad_number"),
        (b'[{"ods_code": "A", "name": "a", "hectares": NaN}]', "bad_number"),
        (b'[{"ods_code": "A", "name": "a", "hectares": -Infinity}]', "bad_number"),
    ],
    ids=["deep-arrays", "deep-objects", "float-overflow", "5000-digit-int", "nan", "infinity"],
)
def test_json_python_cannot_hold_is_a_named_error(
    api: str, root: Path, server: Upstream, http: HttpClient, raw: bytes, kind: str
) -> None:
    url = f"{api}/hostile/"
    publish(root, url, None, raw=raw)
    with pytest.raises(PermanentError) as caught:
        sync(entry(url), http)
    assert caught.value.kind == kind
    assert url in str(caught.value)


def test_an_api_key_with_a_trailing_newline_is_sent_trimmed(
    api: str, root: Path, server: Upstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{api}/key_file/"
    source_entry = keyed_entry(root, url, monkeypatch, "s3cr3t-key-value\n")
    assert pairs(sync(source_entry, http)) == [("A", "a")]
    assert server.hits(url)[0].get("Ocp-Apim-Subscription-Key") == "s3cr3t-key-value"
    assert SOURCE.secrets(source_entry) == ["s3cr3t-key-value\n"]

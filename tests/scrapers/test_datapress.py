"""The datapress source against a real local DataPress portal (``tests/api_upstream.py``, seed 003)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scrapers.datapress import DataPress
from scrapers.errors import PermanentError
from scrapers.http import HttpClient, NotModified, Validators
from tests.api_examples import BOROUGHS, dataset_document
from tests.api_upstream import DATAPRESS_HOST, STORAGE_HOST, ApiUpstream
from tests.scrapers.sources_helpers import Entry, client, entry, fetch, pairs, rows

KIND = "datapress"
KEY = "dp-key-7f3a9c1e5b"


@pytest.fixture
def http(apis: ApiUpstream) -> Iterator[HttpClient]:
    apis.datapress.datasets["2k4x9"] = dataset_document("2k4x9")
    apis.datapress.add_resource("2k4x9", "k93", BOROUGHS, "csv", title="boroughs")
    apis.datapress.add_resource("2k4x9", "p07", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\nguide", "pdf", title="guide", order=1)
    apis.datapress.datasets["7prv1"] = dataset_document("7prv1", sharing="private")
    apis.datapress.keys["7prv1"] = KEY
    apis.datapress.add_resource("7prv1", "a1b", BOROUGHS, "csv", title="private-boroughs")
    http_client = client(apis)
    yield http_client
    http_client.close()


def dp_entry(dataset_id: str = "2k4x9", *hosts: str, **params: Any) -> Entry:
    params.setdefault("code_column", "code")
    params.setdefault("label_column", "name")
    return entry(KIND, f"https://{DATAPRESS_HOST}/api/dataset/{dataset_id}", *hosts, **params)


def test_the_only_csv_beside_a_pdf_is_read(apis: ApiUpstream, http: HttpClient) -> None:
    assert pairs(rows(KIND, dp_entry(), http)) == [
        ("E09000002", "Barking and Dagenham"),
        ("E09000003", "Barnet"),
        ("E09000001", "City of London"),
    ]
    assert not apis.hits(f"https://{DATAPRESS_HOST}/download/2k4x9/p07")


def test_an_unchanged_resource_downloads_no_file_bytes(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = dp_entry()
    token = DataPress().kept_validators(fetch(KIND, source_entry, http)).token
    assert token and "k93" in token
    downloads = len(apis.hits(f"https://{DATAPRESS_HOST}/download/"))
    with pytest.raises(NotModified) as caught:
        fetch(KIND, source_entry, http, Validators(token=token))
    assert len(apis.hits(f"https://{DATAPRESS_HOST}/download/")) == downloads
    assert "same hash and size" in caught.value.reason


def test_a_changed_resource_is_downloaded_again(apis: ApiUpstream, http: HttpClient) -> None:
    source_entry = dp_entry()
    token = DataPress().kept_validators(fetch(KIND, source_entry, http)).token
    url = apis.datapress.datasets["2k4x9"]["resources"]["k93"]["url"]
    apis.datapress.replace_file(url, BOROUGHS + b"E09000004,Bexley,Outer London\r\n")
    documents = fetch(KIND, source_entry, http, Validators(token=token))
    assert DataPress().parse(source_entry, documents)[-1].label == "Bexley"


def test_a_download_that_does_not_match_the_hash_is_refused(apis: ApiUpstream, http: HttpClient) -> None:
    url = apis.datapress.datasets["2k4x9"]["resources"]["k93"]["url"]
    apis.datapress.replace_file(url, BOROUGHS.replace(b"Barnet", b"Barnat"), update_document=False)
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry(), http)
    assert caught.value.kind == "hash_mismatch"
    assert "'k93'" in str(caught.value)


def test_a_truncated_download_is_a_size_mismatch(apis: ApiUpstream, http: HttpClient) -> None:
    url = apis.datapress.datasets["2k4x9"]["resources"]["k93"]["url"]
    apis.datapress.replace_file(url, BOROUGHS[:-20], update_document=False)
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry(), http)
    assert caught.value.kind == "size_mismatch"
    assert f"{len(BOROUGHS) - 20} bytes, the dataset says {len(BOROUGHS)}" in str(caught.value)


def test_several_csv_files_need_resource_id(apis: ApiUpstream, http: HttpClient) -> None:
    apis.datapress.add_resource("2k4x9", "z2q", BOROUGHS, "csv", title="copy")
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry(), http)
    assert caught.value.kind == "ambiguous_resource"
    assert "k93 (csv), p07 (pdf), z2q (csv)" in str(caught.value)
    assert len(rows(KIND, dp_entry(resource_id="z2q"), http)) == 3


def test_an_unknown_resource_id_lists_the_resources(apis: ApiUpstream, http: HttpClient) -> None:
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry(resource_id="nope"), http)
    assert caught.value.kind == "unknown_resource"
    assert "k93 (csv), p07 (pdf)" in str(caught.value)


def test_choosing_the_pdf_fails_as_not_a_csv(apis: ApiUpstream, http: HttpClient) -> None:
    with pytest.raises(PermanentError) as caught:
        rows(KIND, dp_entry(resource_id="p07"), http)
    assert caught.value.kind == "not_csv"
    assert "resource 'p07' is pdf, not csv" in str(caught.value)
    assert not apis.hits(f"https://{DATAPRESS_HOST}/download/2k4x9/p07")


def test_a_private_dataset_with_its_key(apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONDON_DATASTORE_KEY", KEY)
    assert len(rows(KIND, dp_entry("7prv1", api_key_env="LONDON_DATASTORE_KEY"), http)) == 3
    assert all(headers["Authorization"] == KEY for _, headers in apis.hits(f"https://{DATAPRESS_HOST}/"))


def test_a_private_dataset_without_a_key_is_access_denied(apis: ApiUpstream, http: HttpClient) -> None:
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry("7prv1"), http)
    assert caught.value.kind == "access_denied"
    assert "private; set api_key_env to a variable holding a key" in str(caught.value)


def test_a_key_without_permission_is_access_denied(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LONDON_DATASTORE_KEY", "someone-elses-key")
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry("7prv1", api_key_env="LONDON_DATASTORE_KEY"), http)
    assert caught.value.kind == "access_denied"
    assert "private; the key in LONDON_DATASTORE_KEY may not read it" in str(caught.value)
    assert "someone-elses-key" not in str(caught.value)


def test_an_unset_key_variable_is_named(apis: ApiUpstream, http: HttpClient) -> None:
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry("7prv1", api_key_env="LONDON_DATASTORE_KEY"), http)
    assert caught.value.kind == "missing_credentials"
    assert "LONDON_DATASTORE_KEY is not set" in str(caught.value)


def test_an_unknown_dataset_is_its_own_error(apis: ApiUpstream, http: HttpClient) -> None:
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry("zzzzz"), http)
    assert caught.value.kind == "unknown_dataset"
    assert "/api/dataset/zzzzz" in str(caught.value)


def test_the_key_never_follows_a_redirect_to_storage(
    apis: ApiUpstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LONDON_DATASTORE_KEY", KEY)
    resource = apis.datapress.datasets["7prv1"]["resources"]["a1b"]
    stored = f"https://{STORAGE_HOST}/london/7prv1/a1b/boroughs.csv?X-Amz-Signature=abc"
    apis.datapress.redirects[resource["url"].removeprefix(f"https://{DATAPRESS_HOST}")] = stored
    apis.datapress.files["/london/7prv1/a1b/boroughs.csv"] = BOROUGHS
    source_entry = dp_entry("7prv1", STORAGE_HOST, api_key_env="LONDON_DATASTORE_KEY")
    documents = fetch(KIND, source_entry, http)
    assert documents[-1].url == stored
    storage_hits = apis.hits(f"https://{STORAGE_HOST}/")
    assert storage_hits and all("Authorization" not in headers for _, headers in storage_hits)


def test_a_redirect_to_an_unlisted_host_is_refused(apis: ApiUpstream, http: HttpClient) -> None:
    resource = apis.datapress.datasets["2k4x9"]["resources"]["k93"]
    apis.datapress.redirects[resource["url"].removeprefix(f"https://{DATAPRESS_HOST}")] = (
        f"https://{STORAGE_HOST}/x.csv"
    )
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry(), http)
    assert caught.value.kind == "redirect"
    assert STORAGE_HOST in str(caught.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("resources"), "not a DataPress dataset (no 'resources' object)"),
        (lambda d: d["resources"]["k93"].pop("hash"), "resource 'k93' has no valid 'hash'"),
        (lambda d: d["resources"]["k93"].update(size="1337"), "resource 'k93' has no valid 'size'"),
        (lambda d: d["resources"]["k93"].update(url=None), "resource 'k93' has no valid 'url'"),
        (lambda d: d["resources"].clear(), "no CSV resource; it has none"),
    ],
)
def test_malformed_dataset_documents(apis: ApiUpstream, http: HttpClient, change: Any, expected: str) -> None:
    change(apis.datapress.datasets["2k4x9"])
    with pytest.raises(PermanentError) as caught:
        fetch(KIND, dp_entry(), http)
    assert expected in str(caught.value)


def test_the_url_must_be_a_dataset_document() -> None:
    assert DataPress().check_url(f"https://{DATAPRESS_HOST}/dataset/2k4x9/london-boroughs")
    assert DataPress().check_url(f"https://{DATAPRESS_HOST}/api/v3/dataset/2k4x9") is None

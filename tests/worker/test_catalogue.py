"""The catalogue: the shipped file, selection, and malformed files failing with file, entry and field."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from scrapers.json_api import JsonApiParams
from worker.catalogue import Catalogue, CatalogueError, load_catalogue
from worker.settings import DEFAULT_CATALOGUE

FIRST = """
[[datasets]]
key = "ethnic_category"
name = "Ethnic Category"
category = "nhs_dd"
source = "nhs_dd"
url = "https://www.datadictionary.nhs.uk/data_elements/ethnic_category.html"
tags = ["demographics", "NHS"]
frequency_hours = 168
"""

JSON_ENTRY = """
[[datasets]]
key = "nhs_trusts"
name = "NHS Trusts"
category = "rcpch"
source = "json_api"
url = "https://api.rcpch.ac.uk/nhs-organisations/v1/trusts/"
code_field = "ods_code"
label_field = "name"
"""


def second(**fields: object) -> str:
    """A second ``[[datasets]]`` entry; a value of None leaves that field out."""
    base: dict[str, object] = {
        "key": "second_list",
        "name": "Second List",
        "category": "nhs_dd",
        "source": "nhs_dd",
        "url": "https://www.datadictionary.nhs.uk/data_elements/x.html",
    }
    base.update(fields)
    lines = ["", "[[datasets]]"]
    for name, value in base.items():
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"{name} = {str(value).lower()}")
        elif isinstance(value, (int, float)):
            lines.append(f"{name} = {value}")
        else:
            lines.append(f"{name} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my-catalogue.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    message = str(caught.value)
    assert str(path) in message
    return message


# --- the shipped catalogue ------------------------------------------------------------------------


def test_shipped_catalogue_has_55_entries_48_nhs_dd_and_7_rcpch() -> None:
    catalogue = load_catalogue(DEFAULT_CATALOGUE)
    assert len(catalogue.entries) == 55
    assert Counter(e.category for e in catalogue.entries) == {"nhs_dd": 48, "rcpch": 7}
    assert Counter(e.source for e in catalogue.entries) == {"nhs_dd": 48, "json_api": 7}
    assert all(e.source == e.category or (e.category, e.source) == ("rcpch", "json_api") for e in catalogue.entries)


def test_shipped_catalogue_keys_are_unique_slugs() -> None:
    keys = [e.key for e in load_catalogue(DEFAULT_CATALOGUE).entries]
    assert len(keys) == len(set(keys))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9_]*", key) for key in keys)


def test_shipped_entries_are_complete() -> None:
    for entry in load_catalogue(DEFAULT_CATALOGUE).entries:
        assert entry.name and entry.frequency_hours > 0, entry.key
        assert entry.url.startswith("https://"), entry.key
        assert entry.enabled, entry.key
        if entry.source == "nhs_dd":
            assert entry.url.startswith("https://www.datadictionary.nhs.uk/data_elements/"), entry.key
            assert "NHS" in entry.tags, entry.key
            assert entry.stamp_field == "last_scraped" and entry.source_type == "scrape"
        else:
            assert entry.url.startswith("https://api.rcpch.ac.uk/"), entry.key
            assert isinstance(entry.params, JsonApiParams) and entry.params.code_field, entry.key
            assert entry.stamp_field == "last_synced_at" and entry.source_type == "api"


def test_shipped_urls_are_unique() -> None:
    urls = [e.url for e in load_catalogue(DEFAULT_CATALOGUE).entries]
    assert len(urls) == len(set(urls))


def test_rcpch_entries_carry_the_api_key_header() -> None:
    for entry in load_catalogue(DEFAULT_CATALOGUE).select(category="rcpch"):
        assert entry.params.api_key_env == "RCPCH_API_KEY", entry.key
        assert entry.params.api_key_header == "Ocp-Apim-Subscription-Key", entry.key


def test_allowed_hosts_include_the_url_host(tmp_path: Path) -> None:
    text = FIRST + second(allowed_hosts=["Mirror.Example.org"])
    by_key = load_catalogue(write(tmp_path, text)).by_key()
    assert by_key["ethnic_category"].allowed_hosts == {"www.datadictionary.nhs.uk"}
    assert by_key["second_list"].allowed_hosts == {"www.datadictionary.nhs.uk", "mirror.example.org"}


def test_single_code_field_becomes_a_tuple_and_lists_are_kept(tmp_path: Path) -> None:
    text = JSON_ENTRY + second(
        key="units",
        category="rcpch",
        source="json_api",
        url="https://api.rcpch.ac.uk/x/",
        code_field=["parent.ods_code", "pz_code"],
        label_field="parent.name",
        label_default="PDU {pz_code}",
    )
    by_key = load_catalogue(write(tmp_path, text)).by_key()
    assert by_key["nhs_trusts"].params.code_field == ("ods_code",)
    assert by_key["units"].params.code_field == ("parent.ods_code", "pz_code")
    assert by_key["units"].params.label_default == "PDU {pz_code}"


# --- select ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> Catalogue:
    return load_catalogue(DEFAULT_CATALOGUE)


def test_select_by_keys_keeps_the_requested_order(shipped: Catalogue) -> None:
    chosen = shipped.select(["nhs_trusts", "ethnic_category"])
    assert [e.key for e in chosen] == ["nhs_trusts", "ethnic_category"]


def test_select_by_category(shipped: Catalogue) -> None:
    rcpch = shipped.select(category="rcpch")
    assert len(rcpch) == 7 and {e.category for e in rcpch} == {"rcpch"}
    assert len(shipped.select(category="nhs_dd")) == 48
    assert shipped.select(category="external_api") == []


def test_select_by_keys_and_category_filters_both(shipped: Catalogue) -> None:
    chosen = shipped.select(["nhs_trusts", "ethnic_category"], category="rcpch")
    assert [e.key for e in chosen] == ["nhs_trusts"]


def test_select_everything(shipped: Catalogue) -> None:
    assert [e.key for e in shipped.select()] == [e.key for e in shipped.entries]


def test_select_unknown_key_is_an_error_naming_it(shipped: Catalogue) -> None:
    with pytest.raises(CatalogueError) as caught:
        shipped.select(["ethnic_category", "ethnic_categroy", "nope"])
    message = str(caught.value)
    assert "'ethnic_categroy'" in message and "'nope'" in message
    assert str(shipped.path) in message


def test_disabled_entries_are_left_out_unless_named(tmp_path: Path) -> None:
    catalogue = load_catalogue(write(tmp_path, FIRST + second(enabled=False)))
    assert [e.key for e in catalogue.select()] == ["ethnic_category"]
    assert [e.key for e in catalogue.select(["second_list"])] == ["second_list"]


# --- malformed catalogues -------------------------------------------------------------------------


def test_bad_toml_syntax(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + "\n[[datasets]\nkey = 'broken'\n")
    assert "TOML" in message and "line" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="not found") as caught:
        load_catalogue(tmp_path / "absent.toml")
    assert "absent.toml" in str(caught.value)


@pytest.mark.parametrize(
    "text", ["", "title = 'no datasets here'\n", "datasets = []\n"], ids=["empty", "other", "empty-list"]
)
def test_no_entries(tmp_path: Path, text: str) -> None:
    assert "no [[datasets]] entries" in error_for(tmp_path, text)


def test_missing_url(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + second(url=None))
    assert "entry 2" in message and "'second_list'" in message and "'url'" in message


def test_unknown_source_kind(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + second(source="fhir"))
    assert "entry 2" in message and "'second_list'" in message and "'source'" in message
    assert "fhir" in message and "nhs_dd" in message and "json_api" in message


def test_unknown_key_typo(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + second(frequncy_hours=24))
    assert "entry 2" in message and "'second_list'" in message
    assert "'frequncy_hours'" in message and "unknown key" in message


def test_json_api_field_on_an_nhs_dd_entry_is_unknown(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + second(code_field="ods_code"))
    assert "entry 2" in message and "'code_field'" in message and "unknown key" in message


def test_json_api_entry_without_code_field(tmp_path: Path) -> None:
    text = FIRST + second(
        key="trusts", category="rcpch", source="json_api", url="https://api.rcpch.ac.uk/t/", label_field="name"
    )
    message = error_for(tmp_path, text)
    assert "entry 2" in message and "'trusts'" in message and "'code_field'" in message
    assert "json_api" in message


def test_json_api_entry_with_a_bad_max_pages(tmp_path: Path) -> None:
    text = JSON_ENTRY.replace('label_field = "name"', 'label_field = "name"\nmax_pages = 0')
    message = error_for(tmp_path, text)
    assert "entry 1" in message and "'nhs_trusts'" in message and "'max_pages'" in message


def test_duplicate_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + second() + second(name="Again"))
    assert "entry 3" in message and "'key'" in message and "duplicate" in message and "'second_list'" in message


@pytest.mark.parametrize("key", ["Ethnic_Category", "two words", "with-dash", "_leading", "", "ümlaut"])
def test_non_slug_key(tmp_path: Path, key: str) -> None:
    message = error_for(tmp_path, FIRST + second(key=key))
    assert "entry 2" in message and "'key'" in message


def test_missing_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + second(key=None))
    assert "entry 2" in message and "'key'" in message


@pytest.mark.parametrize("hours", [0, -1])
def test_frequency_hours_must_be_positive(tmp_path: Path, hours: int) -> None:
    message = error_for(tmp_path, FIRST + second(frequency_hours=hours))
    assert "entry 2" in message and "'second_list'" in message and "'frequency_hours'" in message


@pytest.mark.parametrize(
    "url",
    [
        "ftp://www.datadictionary.nhs.uk/x.html",
        "www.datadictionary.nhs.uk/x.html",
        "file:///etc/passwd",
        "/data_elements/x.html",
        "https://",
    ],
)
def test_non_http_url(tmp_path: Path, url: str) -> None:
    message = error_for(tmp_path, FIRST + second(url=url))
    assert "entry 2" in message and "'second_list'" in message and "'url'" in message


def test_unknown_category(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + second(category="user_created"))
    assert "entry 2" in message and "'category'" in message


def test_wrong_type_for_tags(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + second(tags="NHS"))
    assert "entry 2" in message and "'tags'" in message


def test_first_problem_stops_before_anything_else(tmp_path: Path) -> None:
    message = error_for(tmp_path, second(key="first_bad", url="ftp://x/") + FIRST + second(source="fhir"))
    assert "entry 1" in message and "'first_bad'" in message


def test_datasets_that_are_not_tables(tmp_path: Path) -> None:
    message = error_for(tmp_path, "datasets = [1, 2]\n")
    assert "entry 1" in message


def test_a_misspelled_table_name_is_not_silently_ignored(tmp_path: Path) -> None:
    text = (
        FIRST + "\n[[dataset]]\nkey = 'lost'\nname = 'Lost'\ncategory = 'nhs_dd'\nsource = 'nhs_dd'\n"
        "url = 'https://www.datadictionary.nhs.uk/data_elements/lost.html'\n"
    )
    message = error_for(tmp_path, text)
    assert "dataset" in message


@pytest.mark.parametrize("window", ["01:00-05:00", "22:00-06:00"])
def test_a_sync_window_is_accepted(tmp_path: Path, window: str) -> None:
    path = write(tmp_path, FIRST + f'sync_window = "{window}"\n')
    assert load_catalogue(path).entries[0].sync_window == window


@pytest.mark.parametrize("window", ["1-5", "25:00-01:00", "05:00-05:00", "night"])
def test_a_bad_sync_window_names_the_field(tmp_path: Path, window: str) -> None:
    message = error_for(tmp_path, FIRST + f'sync_window = "{window}"\n')
    assert "sync_window" in message and "HH:MM-HH:MM" in message


@pytest.mark.parametrize(
    "url, found",
    [
        ("https://bob:hunter2@www.datadictionary.nhs.uk/x.html", "user:password@ or TOKEN@"),
        ("https://ghp_T0KEN@api.rcpch.ac.uk/x/", "user:password@ or TOKEN@"),
        ("https://api.rcpch.ac.uk/x/?api_key=abc", "'api_key'"),
        ("https://api.rcpch.ac.uk/x/?page=1&token=abc", "'token'"),
        ("https://api.rcpch.ac.uk/x/?subscription-key=abc", "'subscription-key'"),
        ("https://api.rcpch.ac.uk/x/?apiKey=abc", "'apiKey'"),
        ("https://api.rcpch.ac.uk/x/?access_token=abc", "'access_token'"),
    ],
)
def test_credentials_in_a_url_are_refused(tmp_path: Path, url: str, found: str) -> None:
    message = error_for(tmp_path, FIRST + second(url=url))
    assert "entry 2" in message and "'url'" in message and found in message
    assert "api_key_env" in message and "environment variable" in message


def test_innocent_query_parameters_are_accepted(tmp_path: Path) -> None:
    url = "https://api.rcpch.ac.uk/x/?page=2&author=x&design=y&keyword=z&f=json"
    [_, entry] = load_catalogue(write(tmp_path, FIRST + second(url=url))).entries
    assert entry.url == url


@pytest.mark.parametrize(
    "hours, problem",
    [("inf", "finite number"), ("nan", "finite number"), ("1e12", "less than or equal to 8760"), ("8761", "8760")],
)
def test_frequency_hours_must_be_within_a_year(tmp_path: Path, hours: str, problem: str) -> None:
    message = error_for(tmp_path, FIRST + second(key="bad_hours") + f"frequency_hours = {hours}\n")
    assert "entry 2 (key 'bad_hours')" in message and "field 'frequency_hours'" in message and problem in message


def test_json_api_max_pages_is_bounded(tmp_path: Path) -> None:
    message = error_for(tmp_path, FIRST + JSON_ENTRY + "max_pages = 1000000\n")
    assert "entry 2 (key 'nhs_trusts')" in message and "field 'max_pages'" in message


def test_entries_share_the_values_they_repeat(tmp_path: Path) -> None:
    """A status over thousands of entries holds them all: repeated values are one object, entries have no
    ``__dict__`` (issue 11: a 5,000-entry catalogue held 6 MB, now 2 MB)."""
    third = second(key="third_list", url="https://www.datadictionary.nhs.uk/data_elements/y.html")
    first, two, three = load_catalogue(write(tmp_path, FIRST + second(tags=["demographics", "NHS"]) + third)).entries
    assert two.tags is first.tags and two.category is first.category and two.source is first.source
    assert two.allowed_hosts is first.allowed_hosts and two.params is first.params
    assert two.frequency_hours is three.frequency_hours and two.description is three.description
    assert (two.key, three.key, three.tags) == ("second_list", "third_list", ())
    assert not hasattr(first, "__dict__")

"""The catalogue against the store profile's limits and the platform's ownership rules, before any fetch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.datasets import CHECKTICK_LIMITS, DATASYNC_LIMITS
from tests.upstream import Upstream
from tests.worker.test_catalogue import FIRST, JSON_ENTRY, second, write
from worker.catalogue import CatalogueError, load_catalogue
from worker.settings import DEFAULT_CATALOGUE

DD = "https://www.datadictionary.nhs.uk/data_elements/"


def refusal(tmp_path: Path, text: str, limits: object = CHECKTICK_LIMITS) -> str:
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path, limits)  # type: ignore[arg-type]
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    return message


def test_the_shipped_catalogue_fits_both_profiles() -> None:
    for limits in (DATASYNC_LIMITS, CHECKTICK_LIMITS):
        assert len(load_catalogue(DEFAULT_CATALOGUE, limits).entries) >= 55


@pytest.mark.parametrize(
    ("fields", "field", "detail"),
    [
        ({"key": "k" * 101}, "key", "101 characters, the store's dataset table takes at most 100"),
        ({"url": DD + "x" * 160 + ".html"}, "url", "at most 200"),
        ({"url": DD + "p" * 101 + ".html"}, "url", "page name is 101 characters"),
        ({"format_pattern": "f" * 51}, "format_pattern", "at most 50"),
    ],
    ids=["key", "url", "page_id", "format_pattern"],
)
def test_checktick_limits_name_the_entry_and_field(
    tmp_path: Path, fields: dict[str, object], field: str, detail: str
) -> None:
    text = FIRST + second(**fields)
    message = refusal(tmp_path, text)
    assert "entry 2" in message and f"field {field!r}" in message and detail in message
    assert len(load_catalogue(write(tmp_path, text), DATASYNC_LIMITS).entries) == 2  # datasync's own table takes it


def test_a_key_over_255_is_refused_by_both_profiles(tmp_path: Path) -> None:
    assert "field 'key'" in refusal(tmp_path, FIRST + second(key="k" * 256), DATASYNC_LIMITS)


def test_new_categories_are_accepted(tmp_path: Path) -> None:
    text = JSON_ENTRY.replace('"rcpch"', '"snomed"') + second(category="reference", source="nhs_dd")
    entries = load_catalogue(write(tmp_path, text), CHECKTICK_LIMITS).entries
    assert [e.category for e in entries] == ["snomed", "reference"]


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"category": "rcpch", "organization_id": 5, "team_id": 9}, "organization_id or team_id, not both"),
        ({"organization_id": 5}, "an nhs_dd list is global"),
        ({"team_id": 9}, "an nhs_dd list is global"),
        ({"category": "rcpch", "organization_id": 0}, "organization_id"),
        ({"category": "user_created"}, "category"),
    ],
    ids=["both", "nhs_dd_org", "nhs_dd_team", "zero_id", "user_created"],
)
def test_ownership_follows_the_platforms_constraints(tmp_path: Path, fields: dict[str, object], detail: str) -> None:
    message = refusal(tmp_path, FIRST + second(**fields), DATASYNC_LIMITS)
    assert "entry 2" in message and detail in message


def test_owned_entries_carry_their_owner(tmp_path: Path) -> None:
    text = JSON_ENTRY + "organization_id = 5\n" + second(category="rcpch", team_id=9)
    entries = load_catalogue(write(tmp_path, text), CHECKTICK_LIMITS).entries
    assert [(e.organization_id, e.team_id) for e in entries] == [(5, None), (None, 9)]


def test_sync_refuses_the_catalogue_before_fetching_anything(tmp_path: Path, upstream: Upstream) -> None:
    path = write(tmp_path, FIRST + second(key="k" * 101))
    env = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")}
    env.update(
        DATASYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'store.db'}",
        DATASYNC_STORE_PROFILE="checktick",
        DATASYNC_URL_REWRITES=upstream.rewrites(),
        DATASYNC_CATALOGUE=str(path),
    )
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "sync"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "entry 2" in result.stderr and "field 'key'" in result.stderr
    assert upstream.hits(DD + "ethnic_category.html") == []

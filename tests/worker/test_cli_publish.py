"""``datasync publish`` as an operator runs it: real processes, the local upstream and catalogue emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.catalogue_api import CatalogueApi
from tests.upstream import Upstream
from tests.worker.celery_harness import write_catalogue
from tests.worker.test_cli import datasync

KEYS = ["ethnic_category", "nhs_trusts"]


@pytest.fixture
def catalogue_api() -> Iterator[CatalogueApi]:
    with CatalogueApi() as api:
        yield api


@pytest.fixture
def env(store_url: str, upstream: Upstream, catalogue_api: CatalogueApi, tmp_path: Path) -> dict[str, str]:
    return {
        "DATASYNC_DATABASE_URL": store_url,
        "DATASYNC_URL_REWRITES": upstream.rewrites(),
        "DATASYNC_CATALOGUE": str(write_catalogue(tmp_path / "catalogue.toml", KEYS)),
        "DATASYNC_PUBLISH_DATASET_API_URL": "https://checktick.example.com/api/datasets/",
        **catalogue_api.env(),
    }


def test_publish_all_then_again_then_withdraw(env: dict[str, str], catalogue_api: CatalogueApi, tmp_path: Path) -> None:
    assert datasync(env, "sync").returncode == 0
    first = datasync(env, "publish", "--all", "--json")
    assert first.returncode == 0, first.stderr
    assert [(o["key"], o["status"]) for o in json.loads(first.stdout)] == [(k, "created") for k in KEYS]
    assert sorted(r["supplierIdentifier"] for r in catalogue_api.records.values()) == sorted(KEYS)
    catalogue_api.clear_log()
    second = datasync(env, "publish", "--all")
    assert second.returncode == 0 and "unchanged: 2" in second.stdout
    assert catalogue_api.requests() == []
    smaller = {**env, "DATASYNC_CATALOGUE": str(write_catalogue(tmp_path / "smaller.toml", KEYS[:1]))}
    third = json.loads(datasync(smaller, "publish", "--all", "--json").stdout)
    assert [(o["key"], o["status"], o["patch"]) for o in third] == [
        ("ethnic_category", "unchanged", None),
        ("nhs_trusts", "withdrawn", {"status": "Withdrawn"}),
    ]
    assert catalogue_api.violations == []


def test_an_invalid_record_exits_2_with_located_errors(
    env: dict[str, str], catalogue_api: CatalogueApi, tmp_path: Path
) -> None:
    long_name = {**env, "DATASYNC_CATALOGUE": str(write_catalogue(tmp_path / "long.toml", KEYS[:1], name="N" * 201))}
    assert datasync(long_name, "sync").returncode == 0
    result = datasync(long_name, "publish", "ethnic_category", "--json")
    assert result.returncode == 2
    [outcome] = json.loads(result.stdout)
    assert outcome["status"] == "invalid"
    assert outcome["error"]["errors"] == [
        {"type": "max_length", "detail": "/title is 201 characters long; the limit is 200", "location": "/title"}
    ]
    assert catalogue_api.requests() == []
    plain = datasync(long_name, "publish", "ethnic_category")
    assert "dataset 'ethnic_category': record not valid for the catalogue: /title" in plain.stdout


def test_publishing_is_off_without_a_url(env: dict[str, str]) -> None:
    off = {name: value for name, value in env.items() if not name.startswith("DATASYNC_PUBLISH_")}
    result = datasync(off, "publish", "--all", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["errors"][0]["location"] == "/DATASYNC_PUBLISH_URL"
    assert result.stderr.strip().startswith("error: publishing is off: set DATASYNC_PUBLISH_URL")
    assert datasync(off, "publish", "--all", "--dry-run").returncode == 0


@pytest.mark.parametrize("command", [["sync"], ["status"], ["publish", "--all"]])
def test_a_bad_catalogue_is_a_located_document_with_json(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(env["DATASYNC_CATALOGUE"]).read_text() + '\n[publish]\naccess_rights = "SHUT"\n')
    result = datasync({**env, "DATASYNC_CATALOGUE": str(bad)}, *command, "--json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["code"] == "catalogue_invalid" and str(bad) in document["message"]
    assert [e["location"] for e in document["errors"]] == ["/publish/access_rights"]


def test_bad_settings_are_a_located_document_with_json(env: dict[str, str]) -> None:
    result = datasync({**env, "DATASYNC_PUBLISH_MAX_ATTEMPTS": "0"}, "status", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["errors"][0]["location"] == "/DATASYNC_PUBLISH_MAX_ATTEMPTS"
    assert env["DATASYNC_PUBLISH_CLIENT_SECRET"] not in result.stdout + result.stderr


def test_status_shows_the_stored_publish_error_of_each_dataset(
    env: dict[str, str], catalogue_api: CatalogueApi, tmp_path: Path
) -> None:
    long_name = {**env, "DATASYNC_CATALOGUE": str(write_catalogue(tmp_path / "long.toml", KEYS, name="N" * 201))}
    assert datasync(long_name, "sync").returncode == 0
    published = datasync(long_name, "publish", "ethnic_category", "--json")
    assert published.returncode == 2
    [outcome] = json.loads(published.stdout)
    status = datasync(long_name, "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {row["key"]: row for row in json.loads(status.stdout)}
    assert rows["ethnic_category"]["publish_error"] == outcome["error"]
    assert rows["ethnic_category"]["publish_error"]["errors"][0]["location"] == "/title"
    assert rows["nhs_trusts"]["publish_error"] is None
    table = datasync({**long_name, "COLUMNS": "400"}, "status")
    assert table.returncode == 0, table.stderr
    [line] = [line for line in table.stdout.splitlines() if "publish:" in line]
    assert "publish: dataset 'ethnic_category': record not valid for the catalogue: /title" in line

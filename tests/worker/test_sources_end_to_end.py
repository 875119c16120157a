"""Every source kind end to end: examples/catalogue.toml synced through URL rewrites into the store.

The upstreams are real local servers: ``tests/upstream.py`` for the NHS Data Dictionary and RCPCH,
``tests/api_upstream.py`` for FHIR, Charitylog, DataPress and ArcGIS; ISO countries need none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pycountry
import pytest
from sqlalchemy import select

from models.datasets import StoredDataset
from models.db import migrate, session_factory
from models.schema import SyncRun
from models.upsert import load_dataset
from scrapers import SOURCES
from scrapers.oauth import ClientCredentials
from tests.api_examples import ARCGIS_SERVICE as SERVICE
from tests.api_examples import CHARITYLOG_DISTRICTS, ENGLAND, ETHNIC, EXAMPLE_SECRETS, LAD_DISTRICTS, seed_examples
from tests.api_upstream import TOKEN_URL, ApiUpstream
from tests.conftest import expected_result
from tests.upstream import Upstream
from worker.catalogue import Catalogue, CatalogueError, load_catalogue
from worker.context import SyncContext
from worker.pipeline import sync_dataset
from worker.review import accept
from worker.settings import REPO_ROOT, Settings

EXAMPLES = REPO_ROOT / "examples" / "catalogue.toml"
EXPAND = "https://ontology.nhs.uk/production1/fhir/ValueSet/$expand"
QUERY = f"https://services1.arcgis.com/ESMARspQHYMw9BZ9/arcgis/rest/services/{SERVICE}/FeatureServer/0/query"
FILES = "https://data.london.gov.uk/download/2k4x9/"


def expected_options(key: str) -> dict[str, str]:
    """What each example entry must store: exactly the source's options."""
    by_kind = {
        "ethnic_category": lambda: expected_result("ethnic_category")["options"],
        "nhs_trusts": lambda: expected_result("nhs_trusts")["options"],
        "ukcore_ethnic_category_england": lambda: {
            c["code"]: c["display"] for c in ETHNIC["expansion"]["contains"] if c["system"] == ENGLAND
        },
        "barnet_carers_districts": lambda: CHARITYLOG_DISTRICTS,
        "london_boroughs_datastore": lambda: {
            "E09000002": "Barking and Dagenham",
            "E09000003": "Barnet",
            "E09000001": "City of London",
        },
        "london_wards": lambda: {
            "E05013970": "Barnet Vale (Barnet)",
            "E05013971": "Brunswick Park (Barnet)",
            "E05000026": 'Abbey, "Old" Town (Barking and Dagenham)',
        },
        "local_authority_districts": lambda: {row["LAD23CD"]: row["LAD23NM"] for row in LAD_DISTRICTS},
        "iso_countries": lambda: {country.alpha_2: country.name for country in pycountry.countries},
        "uk_countries": lambda: {"ENG": "England", "NIR": "Northern Ireland", "SCT": "Scotland", "WLS": "Wales"},
    }
    return by_kind[key]()


@pytest.fixture
def examples() -> Catalogue:
    return load_catalogue(EXAMPLES)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in EXAMPLE_SECRETS.items():
        monkeypatch.setenv(name, value)
    oauth = ClientCredentials(TOKEN_URL, "NHS_TERMINOLOGY_CLIENT_ID", "NHS_TERMINOLOGY_CLIENT_SECRET")
    oauth.forget()
    yield
    oauth.forget()


def context_for(store: str, upstream: Upstream, apis: ApiUpstream) -> SyncContext:
    seed_examples(apis)
    settings = Settings(
        database_url=store,
        url_rewrites=f"{upstream.rewrites()},{apis.rewrites()}",
        host_rate_per_second=1000,
        host_concurrency=8,
        catalogue=EXAMPLES,
    )
    return SyncContext.from_settings(settings)


@pytest.fixture
def kinds_ctx(store_url: str, upstream: Upstream, apis: ApiUpstream, credentials: None) -> Iterator[SyncContext]:
    """On SQLite and on PostgreSQL."""
    context = context_for(store_url, upstream, apis)
    yield context
    context.close()


@pytest.fixture
def sqlite_kinds_ctx(tmp_path: Path, upstream: Upstream, apis: ApiUpstream, credentials: None) -> Iterator[SyncContext]:
    store = f"sqlite:///{tmp_path / 'kinds.db'}"
    migrate(store)
    context = context_for(store, upstream, apis)
    yield context
    context.close()


def sync_all(catalogue: Catalogue, ctx: SyncContext) -> dict[str, str]:
    return {entry.key: sync_dataset(entry, ctx, trigger="manual").status for entry in catalogue.entries}


def stored(ctx: SyncContext, key: str) -> StoredDataset:
    with ctx.sessions() as session:
        dataset = load_dataset(session, key)
        assert dataset is not None
        return dataset


def test_the_example_catalogue_has_one_entry_of_every_kind(examples: Catalogue) -> None:
    assert sorted(entry.source for entry in examples.entries) == sorted(SOURCES)


def test_every_kind_syncs_exactly_then_an_unchanged_resync_costs_no_list_body(
    examples: Catalogue, kinds_ctx: SyncContext, upstream: Upstream, apis: ApiUpstream
) -> None:
    assert set(sync_all(examples, kinds_ctx).values()) == {"created"}
    for entry in examples.entries:
        dataset = stored(kinds_ctx, entry.key)
        assert dataset.options == expected_options(entry.key), entry.key
        assert list(dataset.options) == list(expected_options(entry.key)), entry.key
    districts = stored(kinds_ctx, "barnet_carers_districts")
    assert (districts.row["organization_id"], districts.row["is_global"]) == (42, False)
    assert stored(kinds_ctx, "iso_countries").row["is_global"] is True
    assert stored(kinds_ctx, "local_authority_districts").category == "reference"

    before = {url: len(apis.hits(url)) for url in (FILES, EXPAND, QUERY)}
    second = {entry.key: sync_dataset(entry, kinds_ctx, trigger="manual") for entry in examples.entries}
    assert {key: outcome.status for key, outcome in second.items()} == dict.fromkeys(second, "unchanged")
    assert {outcome.version for outcome in second.values()} == {1}
    assert len(apis.hits(FILES)) == before[FILES]
    assert len(apis.hits(EXPAND)) == before[EXPAND] + 1  # the count=0 probe
    assert len(apis.hits(QUERY)) == before[QUERY]
    for key in ("barnet_carers_districts", "london_wards", "ethnic_category", "nhs_trusts"):
        assert second[key].warnings == ("upstream answered 304 Not Modified",), key
    assert "same hash and size" in second["london_boroughs_datastore"].warnings[0]


@pytest.mark.parametrize(
    ("key", "breakage", "kind"),
    [
        ("ukcore_ethnic_category_england", "fhir_secret", "auth_refused"),
        ("ukcore_ethnic_category_england", "fhir_unknown", "http_404"),
        ("barnet_carers_districts", "charitylog_org", "access_denied"),
        ("london_boroughs_datastore", "datapress_hash", "hash_mismatch"),
        ("london_boroughs_datastore", "datapress_unknown", "unknown_dataset"),
        ("london_wards", "csv_columns", "missing_column"),
        ("local_authority_districts", "arcgis_error", "arcgis_error"),
    ],
)
def test_a_failure_leaves_the_stored_dataset_as_it_was(
    examples: Catalogue,
    sqlite_kinds_ctx: SyncContext,
    apis: ApiUpstream,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    breakage: str,
    kind: str,
) -> None:
    kinds_ctx = sqlite_kinds_ctx
    entry = examples.by_key()[key]
    assert sync_dataset(entry, kinds_ctx, trigger="manual").status == "created"
    before = stored(kinds_ctx, key)
    ClientCredentials(TOKEN_URL, "NHS_TERMINOLOGY_CLIENT_ID", "NHS_TERMINOLOGY_CLIENT_SECRET").forget()
    break_upstream(apis, monkeypatch, breakage)
    outcome = sync_dataset(entry, kinds_ctx, trigger="manual", force=True)
    assert (outcome.status, outcome.error_kind) == ("failed", kind), outcome.error
    after = stored(kinds_ctx, key)
    assert (after.version, after.options, after.content_hash) == (before.version, before.options, before.content_hash)


def break_upstream(apis: ApiUpstream, monkeypatch: pytest.MonkeyPatch, breakage: str) -> None:
    if breakage == "fhir_secret":
        monkeypatch.setenv("NHS_TERMINOLOGY_CLIENT_SECRET", "rotated-but-not-updated")
    elif breakage == "fhir_unknown":
        apis.fhir.value_sets.clear()
    elif breakage == "charitylog_org":
        apis.charitylog.credentials["Org"] = "org-key-rotated"
    elif breakage == "datapress_hash":
        resource = apis.datapress.datasets["2k4x9"]["resources"]["k93"]
        resource["hash"] = "0" * 32
    elif breakage == "datapress_unknown":
        apis.datapress.datasets.clear()
    elif breakage == "csv_columns":
        apis.datapress.files["/download/london-wards/wards.csv"] = b"WD23CD,WD23NM\r\nE05013970,Barnet Vale\r\n"
    elif breakage == "arcgis_error":
        apis.arcgis.layers.clear()


def test_the_cli_syncs_every_kind_and_no_secret_appears_in_output_or_in_the_store(
    tmp_path: Path, upstream: Upstream, apis: ApiUpstream, credentials: None
) -> None:
    """Real CLI processes: every kind syncs; then a server that quotes the token it refuses, and a
    refused Charitylog Org key; no credential or token in stdout, stderr or ``sync_runs``."""
    seed_examples(apis)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")},
        **EXAMPLE_SECRETS,
        "DATASYNC_DATABASE_URL": store,
        "DATASYNC_URL_REWRITES": f"{upstream.rewrites()},{apis.rewrites()}",
        "DATASYNC_CATALOGUE": str(EXAMPLES),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "worker.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    first = cli("sync", "--json")
    assert first.returncode == 0, first.stderr
    assert {row["key"]: row["status"] for row in json.loads(first.stdout)} == {
        entry.key: "created" for entry in load_catalogue(EXAMPLES).entries
    }
    apis.fhir.echo_refused_tokens = True
    apis.charitylog.credentials["Org"] = "what-the-vendor-expects"
    failing = ("ukcore_ethnic_category_england", "barnet_carers_districts")
    runs = [
        first,
        cli("sync", "--force", "--json", *failing),
        cli("sync", "--force", *failing),
        cli("status", "--json"),
    ]
    assert runs[1].returncode == 1, runs[1].stderr
    outcomes = {row["key"]: row for row in json.loads(runs[1].stdout)}
    assert outcomes["ukcore_ethnic_category_england"]["error_kind"] == "http_401"
    assert "[redacted]" in outcomes["ukcore_ethnic_category_england"]["error"]
    assert outcomes["barnet_carers_districts"]["error_kind"] == "access_denied"
    with session_factory(store)() as session:
        columns = [column.name for column in SyncRun.__table__.columns]
        runs_table = session.scalars(select(SyncRun)).all()
        rows = [json.dumps({name: str(getattr(run, name)) for name in columns}) for run in runs_table]
    assert len(rows) == 9 + 2 + 2
    tokens = {headers["Authorization"].removeprefix("Bearer ") for _, headers in apis.hits(EXPAND)}
    assert len(tokens) >= 2  # the one that worked, and the ones the server quoted back
    haystacks = [run.stdout + run.stderr for run in runs] + rows
    for secret in [*EXAMPLE_SECRETS.values(), *tokens]:
        assert not [text for text in haystacks if secret in text], secret


def test_entries_that_are_not_this_kind_fail_on_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    text = EXAMPLES.read_text(encoding="utf-8").replace(
        'url = "https://data.london.gov.uk/api/dataset/2k4x9"', 'url = "https://data.london.gov.uk/dataset/2k4x9"'
    )
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(bad)
    assert "(key 'london_boroughs_datastore'): field 'url': must be a DataPress dataset URL" in str(caught.value)


def test_a_held_change_keeps_no_token_and_accept_applies_the_new_file(
    examples: Catalogue, sqlite_kinds_ctx: SyncContext, apis: ApiUpstream
) -> None:
    """'Unchanged' means 'equal to the last *applied* download': a held file is fetched again."""
    entry = examples.by_key()["london_boroughs_datastore"]
    assert sync_dataset(entry, sqlite_kinds_ctx, trigger="manual").status == "created"
    url = apis.datapress.datasets["2k4x9"]["resources"]["k93"]["url"]
    apis.datapress.replace_file(url, b"code,name\r\nE09000004,Bexley\r\n")  # every old code gone: held
    assert sync_dataset(entry, sqlite_kinds_ctx, trigger="manual").status == "held"
    downloads = len(apis.hits(FILES))
    assert sync_dataset(entry, sqlite_kinds_ctx, trigger="manual").status == "held"
    assert len(apis.hits(FILES)) == downloads + 1
    assert accept(sqlite_kinds_ctx, entry.key).status == "updated"
    assert stored(sqlite_kinds_ctx, entry.key).options == {"E09000004": "Bexley"}
    assert sync_dataset(entry, sqlite_kinds_ctx, trigger="manual").status == "unchanged"  # full download, same hash
    assert len(apis.hits(FILES)) == downloads + 2
    assert sync_dataset(entry, sqlite_kinds_ctx, trigger="manual").warnings[0].endswith("(same hash and size)")
    assert len(apis.hits(FILES)) == downloads + 2

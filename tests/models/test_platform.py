"""The ``checktick`` store profile: datasets written into the platform's own ``surveys_dataset``.

The table comes from the platform's DDL (``tests/models/conftest.py``), on SQLite and on
PostgreSQL, where datasync may only SELECT, INSERT and UPDATE it.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import redis
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from models.datasets import StoreMismatch
from models.db import check_dataset_table, get_engine, migrate
from models.schema import Base, Dataset, DatasetVersion
from models.upsert import load_dataset, upsert_dataset
from scrapers.normalise import content_hash
from tests.conftest import expected_result
from tests.models.conftest import ORGANISATION_ID, TEAM_ID, PlatformStore
from tests.models.test_upsert import OPTIONS, T0, T1, snapshot, spec
from tests.servers import RedisServer
from tests.upstream import Upstream
from tests.worker.celery_harness import CeleryProcesses
from tests.worker.test_cli import datasync
from worker import review
from worker.catalogue import Catalogue, load_catalogue
from worker.context import SyncContext
from worker.pipeline import preview_dataset, sync_dataset
from worker.settings import DEFAULT_CATALOGUE, Settings
from worker.status import dataset_status

NOT_NULL = (
    "key name description category source_type reference_url nhs_dd_page_id is_custom external_api_endpoint "
    "external_api_url is_global options format_pattern created_at updated_at version tags snomed_refset_id "
    "snomed_query_type snomed_ecl is_featured is_active"
).split()
BOOKKEEPING = {"sync_runs", "sync_state", "dataset_versions", "alembic_version"}


def history(ctx: SyncContext, key: str) -> list[DatasetVersion]:
    with ctx.sessions() as session:
        query = select(DatasetVersion).where(DatasetVersion.dataset_key == key).order_by(DatasetVersion.version)
        return list(session.scalars(query))


def assert_platform_constraints(row: dict[str, Any]) -> None:
    """What the platform's columns and checks require of every row a writer leaves."""
    assert [name for name in NOT_NULL if row[name] is None] == [], row["key"]
    assert len(row["key"]) <= 100 and len(row["reference_url"]) <= 200 and len(row["format_pattern"]) <= 50
    assert not (row["category"] == "nhs_dd" and row["organization_id"] is not None)
    assert not (row["is_global"] and row["organization_id"] is not None and row["published_at"] is None)
    assert not (row["organization_id"] is not None and row["team_id"] is not None)
    assert isinstance(row["options"], dict) and all(isinstance(v, str) for v in row["options"].values())


def test_migrate_creates_only_datasyncs_own_tables(platform: PlatformStore, platform_ctx: SyncContext) -> None:
    inspector = inspect(get_engine(platform.url))
    assert set(inspector.get_table_names()) >= BOOKKEEPING
    assert "datasets" not in inspector.get_table_names()
    before = inspector.get_columns("surveys_dataset", schema=platform.schema)
    migrate(platform.url, platform_ctx.settings.dataset_table())  # again: nothing to do
    after = inspect(get_engine(platform.url)).get_columns("surveys_dataset", schema=platform.schema)
    assert [(c["name"], str(c["type"]), c["nullable"]) for c in after] == [
        (c["name"], str(c["type"]), c["nullable"]) for c in before
    ]


def test_shipped_catalogue_syncs_into_the_platform_table_and_a_resync_moves_nothing(
    platform: PlatformStore, platform_ctx: SyncContext, catalogue: Catalogue
) -> None:
    for entry in catalogue.entries:
        outcome = sync_dataset(entry, platform_ctx)
        assert outcome.status == "created", (entry.key, outcome.error)
    first = platform.rows()
    for entry in catalogue.entries:
        row, expected = first[entry.key], expected_result(entry.key)
        assert_platform_constraints(row)
        assert row["options"] == expected["options"], entry.key
        assert (row["version"], row["is_custom"], row["is_global"], row["is_featured"]) == (1, False, True, False)
        assert (row["category"], row["source_type"], row["tags"]) == (
            entry.category,
            entry.source_type,
            list(entry.tags),
        )
        assert row["sync_frequency_hours"] == round(entry.frequency_hours)
        assert (row["snomed_refset_id"], row["snomed_query_type"], row["snomed_ecl"]) == ("", "", "")
        [version] = history(platform_ctx, entry.key)
        assert list(version.options.items()) == list(expected["options"].items())  # source order kept here
        if entry.source == "nhs_dd":
            assert row["nhs_dd_page_id"] == entry.url.rsplit("/", 1)[1].removesuffix(".html")
            assert (row["external_api_endpoint"], row["external_api_url"]) == ("", "")
            assert row["last_scraped"] is not None and row["last_synced_at"] is None
        else:
            assert row["external_api_endpoint"] == entry.url.split("api.rcpch.ac.uk", 1)[1]
            assert (row["nhs_dd_page_id"], row["external_api_url"]) == ("", entry.url)
            assert row["last_synced_at"] is not None and row["last_scraped"] is None

    for entry in catalogue.entries:
        assert sync_dataset(entry, platform_ctx, force=True).status == "unchanged", entry.key
    second = platform.rows()
    for key, row in second.items():
        assert (row["version"], row["updated_at"], row["options"]) == (
            first[key]["version"],
            first[key]["updated_at"],
            first[key]["options"],
        )
    with platform_ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(DatasetVersion)) == len(catalogue.entries)


def test_people_rows_are_never_touched_even_with_a_catalogue_key(
    platform: PlatformStore, platform_ctx: SyncContext, catalogue: Catalogue
) -> None:
    parent = catalogue.select(["nhs_trusts"])[0]
    assert sync_dataset(parent, platform_ctx).status == "created"
    parent_id = platform.rows()["nhs_trusts"]["id"]
    custom = {"category": "user_created", "is_custom": True, "organization_id": ORGANISATION_ID, "parent_id": parent_id}
    platform.insert(key="london_boroughs", name="Our boroughs", options={"X": "Ours"}, **custom)
    platform.insert(key="nhs_england_regions", name="Mine", is_custom=False, options={"A": "Mine"})
    hand_made = {"category": "external_api", "source_type": "manual", "is_custom": False, "is_global": True}
    platform.insert(key="welsh_lhbs", name="Typed in by an admin", options={"W": "Wales"}, **hand_made)
    before = platform.rows()
    for key in ("london_boroughs", "nhs_england_regions", "welsh_lhbs"):
        outcome = sync_dataset(catalogue.select([key])[0], platform_ctx)
        assert (outcome.status, outcome.error_kind) == ("failed", "owned_by_people")
        assert "never writes to it" in (outcome.error or "") or "not made by a sync" in (outcome.error or "")
    assert platform.rows() == before
    assert history(platform_ctx, "london_boroughs") == history(platform_ctx, "nhs_england_regions") == []


def test_a_row_the_platforms_old_sync_made_is_adopted_and_its_version_continues(
    platform: PlatformStore, platform_ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    entry = catalogue.select(["nhs_england_regions"])[0]
    options = expected_result(entry.key)["options"]
    platform.insert(  # as sync_external_datasets created it, seven runs ago
        key=entry.key,
        name=entry.name,
        description=entry.description,
        category="rcpch",
        source_type="api",
        is_custom=False,
        is_global=True,
        options=dict(sorted(options.items())),
        tags=list(entry.tags),
        external_api_endpoint="/nhs_england_regions/extended/",
        external_api_url="https://api.rcpch.ac.uk/nhs-organisations/v1",
        reference_url=entry.url,
        version=7,
    )
    adopted = platform.rows()[entry.key]
    assert preview_dataset(entry, platform_ctx).status == "unchanged"  # jsonb's order is not a change
    outcome = sync_dataset(entry, platform_ctx)
    assert (outcome.status, outcome.version) == ("unchanged", 7)
    row = platform.rows()[entry.key]
    assert (row["version"], row["updated_at"], row["options"]) == (7, adopted["updated_at"], options)
    [baseline] = history(platform_ctx, entry.key)
    assert (baseline.version, baseline.origin, list(baseline.options)) == (7, "adopted", list(options))

    body = upstream.body_for(upstream.url_path(entry.url)).replace(b'"London"', b'"Greater London"')
    upstream.set_body(entry.url, body)
    changed = sync_dataset(entry, platform_ctx, force=True)
    assert (changed.status, changed.version, changed.diff.counts()["relabelled"]) == ("updated", 8, 1)
    assert not changed.diff.reordered
    assert sync_dataset(entry, platform_ctx, force=True).version == 8
    assert [v.version for v in history(platform_ctx, entry.key)] == [7, 8]
    assert "Greater London" in platform.rows()[entry.key]["options"].values()


def test_a_seeded_platform_row_without_options_becomes_one_more_version(
    platform: PlatformStore, platform_ctx: SyncContext, catalogue: Catalogue
) -> None:
    entry = catalogue.select(["ethnic_category"])[0]
    platform.insert(  # as seed_nhs_datasets left it: metadata only, options still Django's default []
        key=entry.key,
        name=entry.name,
        category="nhs_dd",
        source_type="scrape",
        is_custom=False,
        is_global=True,
        reference_url=entry.url,
        version=3,
    )
    outcome = sync_dataset(entry, platform_ctx)
    assert (outcome.status, outcome.version) == ("updated", 4)
    row = platform.rows()[entry.key]
    assert_platform_constraints(row)
    assert (row["version"], row["options"]) == (4, expected_result(entry.key)["options"])
    assert row["nhs_dd_page_id"] == "ethnic_category"
    assert [(v.version, v.origin) for v in history(platform_ctx, entry.key)] == [(4, "sync")]


def test_organisation_and_team_lists_are_not_global(
    platform: PlatformStore, upstream: Upstream, catalogue: Catalogue, tmp_path: Path
) -> None:
    path = catalogue_with(
        tmp_path / "owned.toml",
        {"london_boroughs": {"organization_id": ORGANISATION_ID}, "welsh_lhbs": {"team_id": TEAM_ID}},
    )
    settings = platform.settings(upstream, catalogue=path)
    migrate(settings.database_url, settings.dataset_table())
    ctx = SyncContext.from_settings(settings)
    try:
        for entry in load_catalogue(path, settings.dataset_table().limits).entries:
            assert sync_dataset(entry, ctx).status == "created"
    finally:
        ctx.close()
    rows = platform.rows()
    for row in rows.values():
        assert_platform_constraints(row)
        assert row["is_global"] is False or row["is_global"] == 0
    assert (rows["london_boroughs"]["organization_id"], rows["london_boroughs"]["team_id"]) == (ORGANISATION_ID, None)
    assert (rows["welsh_lhbs"]["organization_id"], rows["welsh_lhbs"]["team_id"]) == (None, TEAM_ID)


def test_both_profiles_store_the_same_options_and_stamps(
    platform: PlatformStore, platform_ctx: SyncContext, ctx: SyncContext, catalogue: Catalogue
) -> None:
    entries = catalogue.select(["ethnic_category", "main_specialty_code", "nhs_trusts", "hospitals_england_wales"])
    for entry in entries:
        assert sync_dataset(entry, ctx).status == sync_dataset(entry, platform_ctx).status == "created"
    rows = platform.rows()
    with ctx.sessions() as session:
        own = {d.key: d for d in session.scalars(select(Dataset))}
    for entry in entries:
        mine, theirs = own[entry.key], rows[entry.key]
        assert mine.options == theirs["options"]
        assert list(mine.options.items()) == list(history(platform_ctx, entry.key)[0].options.items())
        assert [history_row.content_hash for history_row in history(ctx, entry.key)] == [
            history_row.content_hash for history_row in history(platform_ctx, entry.key)
        ]
        stamps = ("last_scraped", "last_synced_at")
        assert [getattr(mine, s) is None for s in stamps] == [theirs[s] is None for s in stamps]
        for name in ("name", "description", "category", "source_type", "tags", "version", "format_pattern"):
            assert getattr(mine, name) == theirs[name], (entry.key, name)


def test_the_same_upsert_gives_the_same_list_and_stamps_through_both_profiles(
    platform: PlatformStore, platform_ctx: SyncContext, sqlite_sessions: sessionmaker[Session]
) -> None:
    loaded = []
    for sessions in (sqlite_sessions, platform_ctx.sessions):
        for now in (T0, T1):
            with sessions.begin() as session:
                upsert_dataset(session, spec(), snapshot(), stamp_field="last_scraped", now=now, run_id=None)
        with sessions() as session:
            loaded.append(load_dataset(session, "ethnic_category"))
    own, theirs = loaded
    assert own is not None and theirs is not None
    assert list(own.options.items()) == list(theirs.options.items()) == list(OPTIONS.items())
    assert (own.content_hash, own.version) == (theirs.content_hash, theirs.version) == (content_hash(OPTIONS), 1)
    assert (own.last_scraped, own.updated_at, own.last_synced_at) == (theirs.last_scraped, theirs.updated_at, None)
    assert (theirs.last_scraped, theirs.updated_at) == (T1, T0)
    if platform.schema:  # jsonb: the platform's row has the same codes, shortest keys first
        assert list(platform.rows()["ethnic_category"]["options"]) == sorted(OPTIONS, key=lambda c: (len(c), c))


def test_review_status_and_history_work_on_the_platform_table(
    platform: PlatformStore, platform_ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    entry = catalogue.select(["london_boroughs"])[0]
    sync_dataset(entry, platform_ctx)
    original = platform.rows()[entry.key]["options"]
    body = upstream.body_for(upstream.url_path(entry.url)).replace(b'"Camden"', b'"Camden Town"')
    upstream.set_body(entry.url, body)
    assert sync_dataset(entry, platform_ctx, force=True).version == 2
    assert [row["version"] for row in review.history(platform_ctx, entry.key)] == [2, 1]
    assert review.version_diff(platform_ctx, entry.key)[2].counts()["relabelled"] == 1
    rolled_back = review.rollback(platform_ctx, entry.key, 1)
    assert (rolled_back.status, rolled_back.version) == ("updated", 3)
    row = platform.rows()[entry.key]
    assert (row["version"], row["options"]) == (3, original)
    assert list(history(platform_ctx, entry.key)[-1].options) == list(expected_result(entry.key)["options"])
    review.release(platform_ctx, entry.key)
    status = {r["key"]: r for r in dataset_status(platform_ctx.sessions, catalogue, platform_ctx.settings)}
    assert (status[entry.key]["version"], status[entry.key]["options_count"]) == (3, len(original))
    assert status["ethnic_category"]["version"] is None


def test_the_operator_commands_under_the_checktick_profile(platform: PlatformStore, upstream: Upstream) -> None:
    env = _environment(platform.settings(upstream))
    migrated = datasync(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "datasets" not in inspect(get_engine(platform.url)).get_table_names()
    synced = datasync(env, "sync", "ethnic_category", "nhs_trusts", "--json")
    assert synced.returncode == 0, synced.stderr
    assert {o["status"] for o in json.loads(synced.stdout)} == {"created"}
    status = {row["key"]: row for row in json.loads(datasync(env, "status", "--json").stdout)}
    assert status["nhs_trusts"]["options_count"] == len(expected_result("nhs_trusts")["options"])
    assert status["nhs_trusts"]["last_run"]["status"] == "created"
    versions = json.loads(datasync(env, "history", "ethnic_category", "--json").stdout)
    assert [v["version"] for v in versions] == [1]
    assert set(platform.rows()) == {"ethnic_category", "nhs_trusts"}


def test_a_table_missing_a_column_is_refused_at_start(platform: PlatformStore, upstream: Upstream) -> None:
    if platform.schema:
        platform.execute(f"ALTER TABLE {platform.table} DROP COLUMN nhs_dd_page_id")
        platform.execute(f"ALTER TABLE {platform.table} ALTER COLUMN key TYPE varchar(50)")
        platform.execute(f"ALTER TABLE {platform.table} ADD COLUMN legacy_flag boolean NOT NULL")
    else:
        platform.execute("ALTER TABLE surveys_dataset DROP COLUMN nhs_dd_page_id")
    settings = platform.settings(upstream)
    migrate(settings.database_url, settings.dataset_table())
    with pytest.raises(StoreMismatch, match="missing column nhs_dd_page_id") as refused:
        check_dataset_table(settings.database_url, settings.dataset_table())
    if platform.schema:
        assert "key is VARCHAR(50), datasync writes text of up to 100 characters" in str(refused.value)
        assert "legacy_flag is NOT NULL without a default and datasync does not write it" in str(refused.value)
    env = _environment(settings)
    result = datasync(env, "sync", "ethnic_category")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "missing column nhs_dd_page_id" in result.stderr
    assert upstream.hits("https://www.datadictionary.nhs.uk/data_elements/ethnic_category.html") == []


def test_a_missing_platform_table_is_refused(platform: PlatformStore, upstream: Upstream) -> None:
    settings = platform.settings(upstream, platform_table="surveys_datasets")
    with pytest.raises(StoreMismatch, match="no table .*surveys_datasets.*DATASYNC_PLATFORM_TABLE"):
        check_dataset_table(settings.database_url, settings.dataset_table())


def test_migrate_builds_exactly_the_bookkeeping_models(platform_ctx: SyncContext) -> None:
    own = {name for name in Base.metadata.tables if name != "datasets"}

    def datasyncs(_object: object, name: str | None, kind: str, _reflected: bool, _compare_to: object) -> bool:
        return kind != "table" or name in own

    with get_engine(platform_ctx.settings.database_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": datasyncs})
        assert compare_metadata(context, Base.metadata) == []


def catalogue_with(path: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    """Some shipped entries, each with its own fields changed."""
    shipped = {entry["key"]: entry for entry in tomllib.loads(DEFAULT_CATALOGUE.read_text())["datasets"]}
    blocks = []
    for key, changes in overrides.items():
        fields = {**shipped[key], **changes}
        blocks.append("[[datasets]]\n" + "".join(f"{name} = {json.dumps(value)}\n" for name, value in fields.items()))
    path.write_text("\n".join(blocks))
    return path


def _environment(settings: Settings) -> dict[str, str]:
    return {
        "DATASYNC_DATABASE_URL": settings.database_url,
        "DATASYNC_STORE_PROFILE": "checktick",
        "DATASYNC_PLATFORM_SCHEMA": settings.platform_schema or "",
        "DATASYNC_URL_REWRITES": settings.url_rewrites,
    }


@pytest.mark.slow
@pytest.mark.redis
def test_a_celery_worker_syncs_into_the_platform_table(
    platform: PlatformStore, upstream: Upstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis.Redis.from_url(redis_server.url()).flushall()
    env = {**_environment(platform.settings(upstream)), "DATASYNC_BROKER_URL": redis_server.url()}
    harness = CeleryProcesses(env, tmp_path)
    try:
        assert harness.cli("migrate").returncode == 0
        harness.worker("w1")
        result = harness.cli("resync", "london_boroughs", "ethnic_category", "--wait", "--json", timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr + harness.logs()
        assert {o["status"] for o in json.loads(result.stdout)} == {"created"}
    finally:
        harness.stop()
    rows = platform.rows()
    assert rows["london_boroughs"]["options"] == expected_result("london_boroughs")["options"]
    assert_platform_constraints(rows["ethnic_category"])

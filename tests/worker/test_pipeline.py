"""The pipeline end to end against a real local upstream, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import func, select

from models.schema import Dataset, DatasetVersion, SyncRun, SyncState
from models.types import utcnow
from tests.conftest import expected_result
from tests.upstream import Scripted, Upstream
from worker.catalogue import Catalogue
from worker.context import SyncContext
from worker.pipeline import preview_dataset, sync_dataset


def dataset(ctx: SyncContext, key: str) -> Dataset | None:
    with ctx.sessions() as session:
        return session.scalars(select(Dataset).where(Dataset.key == key)).first()


def runs(ctx: SyncContext, key: str) -> list[SyncRun]:
    with ctx.sessions() as session:
        return list(session.scalars(select(SyncRun).where(SyncRun.dataset_key == key).order_by(SyncRun.id)))


def test_shipped_catalogue_syncs_to_exactly_the_expected_options(ctx: SyncContext, catalogue: Catalogue) -> None:
    for entry in catalogue.entries:
        outcome = sync_dataset(entry, ctx)
        assert outcome.status == "created", (entry.key, outcome.error)
    for entry in catalogue.entries:
        row = dataset(ctx, entry.key)
        expected = expected_result(entry.key)
        assert list(row.options.items()) == list(expected["options"].items()), entry.key
        assert row.retired_codes == expected["retired_codes"], entry.key
        assert row.default_codes == expected["default_codes"], entry.key
        assert (row.category, row.source_type) == (entry.category, entry.source_type)
        assert row.is_global and not row.is_custom and row.version == 1
        assert row.reference_url == entry.url
        stamp = row.last_scraped if entry.source == "nhs_dd" else row.last_synced_at
        other = row.last_synced_at if entry.source == "nhs_dd" else row.last_scraped
        assert stamp is not None and stamp.tzinfo is not None and other is None


def test_second_run_is_unchanged_and_keeps_versions(ctx: SyncContext, catalogue: Catalogue) -> None:
    entries = catalogue.select(["ethnic_category", "nhs_trusts", "hospitals_england_wales"])
    for entry in entries:
        sync_dataset(entry, ctx)
    before = {entry.key: dataset(ctx, entry.key) for entry in entries}
    for entry in entries:
        assert sync_dataset(entry, ctx, force=True).status == "unchanged"
    for entry in entries:
        after = dataset(ctx, entry.key)
        assert after.version == 1
        assert after.updated_at == before[entry.key].updated_at
        stamp = "last_scraped" if entry.source == "nhs_dd" else "last_synced_at"
        assert getattr(after, stamp) > getattr(before[entry.key], stamp)
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(DatasetVersion)) == len(entries)


def test_changed_upstream_bumps_version_and_records_the_change(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    entry = catalogue.select(["nhs_england_regions"])[0]
    sync_dataset(entry, ctx)
    body = upstream.body_for(upstream.url_path(entry.url)).replace(b'"London"', b'"Greater London"')
    upstream.set_body(entry.url, body)
    outcome = sync_dataset(entry, ctx, force=True)
    assert outcome.status == "updated"
    assert outcome.version == 2
    assert outcome.diff.counts() == {"added": 0, "removed": 0, "relabelled": 1}
    run = runs(ctx, entry.key)[-1]
    assert (run.status, run.codes_relabelled, run.version_after) == ("updated", 1, 2)
    assert "Greater London" in dataset(ctx, entry.key).options.values()


def test_fresh_datasets_are_skipped_unless_forced(ctx: SyncContext, catalogue: Catalogue) -> None:
    entry = catalogue.select(["london_boroughs"])[0]
    assert sync_dataset(entry, ctx).status == "created"
    skipped = sync_dataset(entry, ctx)
    assert (skipped.status, skipped.error_kind) == ("skipped", "fresh")
    assert sync_dataset(entry, ctx, force=True).status == "unchanged"


def test_custom_copy_survives_a_resync_of_its_parent(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    entry = catalogue.select(["nhs_trusts"])[0]
    sync_dataset(entry, ctx)
    now = utcnow()
    with ctx.sessions.begin() as session:
        parent = session.scalars(select(Dataset).where(Dataset.key == entry.key)).one()
        session.add(
            Dataset(
                key="nhs_trusts_custom_5_1731744000",
                name="Our trusts",
                category="user_created",
                source_type="manual",
                is_custom=True,
                is_global=False,
                parent_id=parent.id,
                organization_id=5,
                tags=["trusts"],
                options={"RXX01": "Our Trust"},
                created_at=now,
                updated_at=now,
            )
        )
    body = upstream.body_for(upstream.url_path(entry.url)).replace(b"Guy's", b"Guys")
    upstream.set_body(entry.url, body)
    assert sync_dataset(entry, ctx, force=True).status == "updated"
    custom = dataset(ctx, "nhs_trusts_custom_5_1731744000")
    assert custom.options == {"RXX01": "Our Trust"}
    assert (custom.version, custom.updated_at, custom.name) == (1, now, "Our trusts")


def test_catalogue_key_that_names_a_user_row_is_refused(ctx: SyncContext, catalogue: Catalogue) -> None:
    entry = catalogue.select(["nhs_england_regions"])[0]
    now = utcnow()
    with ctx.sessions.begin() as session:
        session.add(
            Dataset(
                key=entry.key,
                name="Mine",
                category="user_created",
                source_type="manual",
                is_custom=False,
                is_global=False,
                tags=[],
                options={"A": "Mine"},
                created_at=now,
                updated_at=now,
            )
        )
    outcome = sync_dataset(entry, ctx)
    assert (outcome.status, outcome.error_kind) == ("failed", "owned_by_people")
    assert dataset(ctx, entry.key).options == {"A": "Mine"}


@pytest.mark.parametrize(
    "fault",
    [
        Scripted(status=404),
        Scripted(status=500),
        Scripted(body=b"<html><body><p>Maintenance</p></body></html>", headers={"Content-Type": "text/html"}),
        Scripted(body=b"\x00\x01garbage\xff" * 100, headers={"Content-Type": "text/html"}),
    ],
)
def test_failed_fetch_or_parse_changes_nothing(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream, fault: Scripted
) -> None:
    entry = catalogue.select(["ethnic_category"])[0]
    sync_dataset(entry, ctx)
    before = dataset(ctx, entry.key)
    upstream.script(entry.url, fault)
    outcome = sync_dataset(entry, ctx, force=True)
    assert outcome.status == "failed"
    assert outcome.error and entry.url in outcome.error
    after = dataset(ctx, entry.key)
    assert (after.options, after.version, after.last_scraped) == (before.options, before.version, before.last_scraped)
    run = runs(ctx, entry.key)[-1]
    assert run.status == "failed" and run.error_kind and run.error_message == outcome.error


def test_first_sync_failure_creates_no_row(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream) -> None:
    entry = catalogue.select(["zygosity_status"])[0]
    upstream.script(entry.url, Scripted(body=b"<html><table><tr><td>x</td></tr></table></html>"))
    outcome = sync_dataset(entry, ctx)
    assert (outcome.status, outcome.error_kind) == ("failed", "no_code_table")
    assert dataset(ctx, entry.key) is None


def test_dry_run_reports_changes_and_writes_nothing(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream) -> None:
    entry = catalogue.select(["nhs_england_regions"])[0]
    assert preview_dataset(entry, ctx).status == "would_create"
    assert dataset(ctx, entry.key) is None
    sync_dataset(entry, ctx)
    upstream.set_body(entry.url, upstream.body_for(upstream.url_path(entry.url)).replace(b'"London"', b'"Londres"'))
    preview = preview_dataset(entry, ctx)
    assert preview.status == "would_update"
    assert list(preview.diff.relabelled.values()) == [("London", "Londres")]
    assert "London" in dataset(ctx, entry.key).options.values()
    assert len(runs(ctx, entry.key)) == 1


def test_lease_held_by_another_worker_skips(ctx: SyncContext, catalogue: Catalogue) -> None:
    from models import lease

    entry = catalogue.select(["nhs_trusts"])[0]
    assert lease.acquire(ctx.sessions, entry.key, "someone-else", 60)
    outcome = sync_dataset(entry, ctx)
    assert (outcome.status, outcome.error_kind) == ("skipped", "busy")
    assert dataset(ctx, entry.key) is None
    lease.release(ctx.sessions, entry.key, "someone-else")
    assert sync_dataset(entry, ctx).status == "created"
    with ctx.sessions() as session:
        assert session.get(SyncState, entry.key).lease_owner is None


def _state(**fields) -> SyncState:
    return SyncState(**{"dataset_key": "k", "paused": False, "consecutive_failures": 0, **fields})


def test_is_due_follows_frequency_failures_pauses_and_windows(catalogue: Catalogue) -> None:
    from dataclasses import replace
    from datetime import datetime, timedelta

    from worker.pipeline import is_due
    from worker.settings import Settings

    settings = Settings(failure_pause_seconds=3600)
    entry = catalogue.select(["nhs_trusts"])[0]  # every 24 h
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert is_due(entry, None, now, settings)
    assert not is_due(entry, _state(last_success_at=now - timedelta(hours=23)), now, settings)
    assert is_due(entry, _state(last_success_at=now - timedelta(hours=25)), now, settings)
    failed_recently = _state(last_status="failed", last_attempt_at=now - timedelta(minutes=10))
    assert not is_due(entry, failed_recently, now, settings)
    assert is_due(entry, _state(last_status="failed", last_attempt_at=now - timedelta(hours=2)), now, settings)
    assert not is_due(entry, _state(last_status="held", last_attempt_at=now - timedelta(minutes=1)), now, settings)
    assert not is_due(entry, _state(paused=True), now, settings)
    overnight = replace(entry, sync_window="22:00-06:00")
    assert not is_due(overnight, None, now, settings)
    assert is_due(overnight, None, now.replace(hour=23), settings)
    assert is_due(overnight, None, now.replace(hour=5, minute=59), settings)
    assert not is_due(overnight, None, now.replace(hour=6), settings)
    assert is_due(replace(entry, sync_window="09:00-17:00"), None, now, settings)


def test_dry_run_says_when_a_change_would_be_held(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream) -> None:
    import json

    entry = catalogue.select(["london_boroughs"])[0]
    sync_dataset(entry, ctx)
    items = json.loads(upstream.body_for(upstream.url_path(entry.url)))
    upstream.set_body(entry.url, json.dumps(items[:5]).encode())
    preview = preview_dataset(entry, ctx)
    assert preview.status == "would_hold"
    assert "would remove 28 of 33" in preview.error


def test_paginated_sources_never_send_validators(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream) -> None:
    entry = catalogue.select(["hospitals_england_wales"])[0]  # three DRF pages
    sync_dataset(entry, ctx)
    assert sync_dataset(entry, ctx, trigger="manual").status == "unchanged"
    first_page_requests = upstream.hits(entry.url)
    assert len(first_page_requests) == 2
    assert "If-None-Match" not in first_page_requests[-1]
    with ctx.sessions() as session:
        assert session.get(SyncState, entry.key).etag is None


def test_runs_record_the_body_bytes_fetched_and_a_304_fetches_none(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    entry = catalogue.select(["nhs_england_regions"])[0]
    body = upstream.body_for(upstream.url_path(entry.url))
    assert body and sync_dataset(entry, ctx).bytes_fetched == len(body)
    again = sync_dataset(entry, ctx, force=True)
    assert again.status == "unchanged" and "304" in " ".join(again.warnings) and again.bytes_fetched == 0
    assert [run.bytes_fetched for run in runs(ctx, entry.key)] == [len(body), 0]

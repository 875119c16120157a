"""Issue 4's promise: the store only moves from one good, explained state to the next."""

from __future__ import annotations

import gzip
import json

import pytest
from sqlalchemy import func, select

from models.schema import Dataset, DatasetVersion, SyncRun, SyncState
from tests.upstream import Scripted, Upstream
from worker.catalogue import Catalogue
from worker.context import SyncContext
from worker.pipeline import sync_dataset

BOROUGHS = "london_boroughs"


def snapshot(ctx: SyncContext, key: str) -> tuple:
    """Everything a sync could touch for ``key`` except the run log and the verification stamps."""
    with ctx.sessions() as session:
        row = session.scalars(select(Dataset).where(Dataset.key == key)).one()
        versions = session.scalar(
            select(func.count()).select_from(DatasetVersion).where(DatasetVersion.dataset_key == key)
        )
        return (list(row.options.items()), row.version, row.updated_at, row.content_hash, row.retired_codes, versions)


def last_run(ctx: SyncContext, key: str) -> SyncRun:
    with ctx.sessions() as session:
        return session.scalars(select(SyncRun).where(SyncRun.dataset_key == key).order_by(SyncRun.id.desc())).first()


def state(ctx: SyncContext, key: str) -> SyncState:
    with ctx.sessions() as session:
        return session.get(SyncState, key)


def boroughs_with(upstream: Upstream, entry_url: str, change) -> None:
    items = json.loads(upstream.body_for(upstream.url_path(entry_url)))
    upstream.set_body(entry_url, json.dumps(change(items)).encode())


@pytest.fixture
def synced(ctx: SyncContext, catalogue: Catalogue):
    """Sync a few datasets once, return a lookup of their catalogue entries."""
    entries = {entry.key: entry for entry in catalogue.select([BOROUGHS, "ethnic_category", "nhs_trusts"])}
    for entry in entries.values():
        assert sync_dataset(entry, ctx).status == "created"
    return entries


def test_unchanged_upstream_answers_304_and_nothing_is_rewritten(ctx, synced, upstream: Upstream) -> None:
    for entry in synced.values():
        before = snapshot(ctx, entry.key)
        outcome = sync_dataset(entry, ctx, trigger="manual")
        assert outcome.status == "unchanged"
        assert "304" in " ".join(outcome.warnings)
        assert upstream.hits(entry.url)[-1].get("If-None-Match")
        assert snapshot(ctx, entry.key) == before
    with ctx.sessions() as session:
        row = session.scalars(select(Dataset).where(Dataset.key == "ethnic_category")).one()
        assert row.last_scraped > row.updated_at


def test_same_body_with_new_validators_is_unchanged_by_hash(ctx, synced, upstream: Upstream) -> None:
    entry = synced["ethnic_category"]
    before = snapshot(ctx, entry.key)
    upstream.script(entry.url, Scripted(headers={"ETag": '"release-2027-01"'}))  # republished, same list
    assert sync_dataset(entry, ctx, trigger="manual").status == "unchanged"
    assert snapshot(ctx, entry.key) == before
    assert state(ctx, entry.key).etag == '"release-2027-01"'


@pytest.mark.parametrize(
    "fault, kind",
    [
        (Scripted(body=b"x" * (6 * 1024 * 1024), headers={"Content-Type": "text/html"}), "too_large"),
        (
            Scripted(
                body=gzip.compress(b"<p>" * 3_000_000),
                headers={"Content-Type": "text/html", "Content-Encoding": "gzip"},
            ),
            "too_large",
        ),
        (Scripted(status=302, headers={"Location": "https://evil.example.com/ethnic_category.html"}), "redirect"),
        (
            Scripted(
                body=b"<html><body><table><tr><th>Context</th><th>Alias</th></tr>"
                b"<tr><td>x</td><td>y</td></tr></table></body></html>"
            ),
            "no_code_table",
        ),
        (Scripted(body=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50, headers={"Content-Type": "text/html"}), "garbage"),
        (Scripted(status=403), "http_403"),
    ],
)
def test_upstream_faults_leave_the_store_exactly_as_it_was(ctx, synced, upstream: Upstream, fault, kind) -> None:
    entry = synced["ethnic_category"]
    before = snapshot(ctx, entry.key)
    upstream.script(entry.url, fault)
    outcome = sync_dataset(entry, ctx, force=True)
    assert (outcome.status, outcome.error_kind) == ("failed", kind), outcome.error
    assert entry.url in outcome.error
    assert snapshot(ctx, entry.key) == before
    run = last_run(ctx, entry.key)
    assert (run.status, run.error_kind, run.error_message) == ("failed", kind, outcome.error)


def test_redirect_within_the_allowed_host_is_followed(ctx, synced, upstream: Upstream) -> None:
    entry = synced["ethnic_category"]
    moved = entry.url.replace("ethnic_category.html", "ethnic_category_moved.html")
    upstream.set_body(moved, upstream.body_for(upstream.url_path(entry.url)))
    upstream.script(entry.url, Scripted(status=301, headers={"Location": upstream.base_url + upstream.url_path(moved)}))
    assert sync_dataset(entry, ctx, force=True).status == "unchanged"
    assert upstream.hits(moved)


def test_a_list_losing_half_its_codes_is_held_not_applied(ctx, synced, upstream: Upstream) -> None:
    entry = synced[BOROUGHS]
    before = snapshot(ctx, entry.key)
    boroughs_with(upstream, entry.url, lambda items: items[:15])
    outcome = sync_dataset(entry, ctx, force=False, trigger="manual")
    assert outcome.status == "held"
    assert "would remove 18 of 33" in outcome.error
    assert snapshot(ctx, entry.key) == before
    held = state(ctx, entry.key)
    assert len(held.held_options) == 15 and held.held_reason == outcome.error
    assert last_run(ctx, entry.key).codes_removed == 18


def test_relabelling_most_codes_is_held(ctx, synced, upstream: Upstream) -> None:
    entry = synced[BOROUGHS]
    boroughs_with(upstream, entry.url, lambda items: [{**item, "name": item["name"].upper()} for item in items])
    outcome = sync_dataset(entry, ctx, trigger="manual")
    assert outcome.status == "held"
    assert "would relabel" in outcome.error


def test_only_accept_changes_applies_a_change_the_guard_would_hold(ctx, synced, upstream: Upstream) -> None:
    entry = synced[BOROUGHS]
    boroughs_with(upstream, entry.url, lambda items: items[:10])
    assert sync_dataset(entry, ctx, force=True).status == "held"
    outcome = sync_dataset(entry, ctx, force=True, accept_changes=True)
    assert (outcome.status, outcome.version, outcome.options) == ("updated", 2, 10)


def test_over_long_label_fails_the_sync_naming_its_row(ctx, synced, upstream: Upstream, catalogue: Catalogue) -> None:
    entry = synced[BOROUGHS]
    before = snapshot(ctx, entry.key)
    ctx.limits = type(ctx.limits)(max_code_length=64, max_label_length=20)
    outcome = sync_dataset(entry, ctx, force=True, refetch=True)
    assert (outcome.status, outcome.error_kind) == ("failed", "bad_row")
    assert f"{entry.url} item 13 (code 'E09000013'): label longer than 20 characters (22)" in outcome.error
    assert snapshot(ctx, entry.key) == before

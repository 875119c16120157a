"""Issue 7's data-safety defects end to end: nothing partial or unreviewed reaches the store."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from models.schema import Dataset, SyncRun
from tests.upstream import Scripted, Upstream
from worker.catalogue import Catalogue
from worker.context import SyncContext
from worker.pipeline import sync_dataset

HOSPITALS = "hospitals_england_wales"
EMPTY_PAGE = json.dumps({"count": 0, "next": None, "previous": None, "results": []}).encode()


def stored(ctx: SyncContext, key: str) -> Dataset | None:
    with ctx.sessions() as session:
        return session.scalars(select(Dataset).where(Dataset.key == key)).first()


def last_run(ctx: SyncContext, key: str) -> SyncRun:
    with ctx.sessions() as session:
        return session.scalars(select(SyncRun).where(SyncRun.dataset_key == key).order_by(SyncRun.id.desc())).first()


def test_a_first_sync_of_pages_that_end_early_writes_nothing(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    [entry] = catalogue.select([HOSPITALS])
    upstream.set_body(f"{entry.url}?page=2", EMPTY_PAGE)
    outcome = sync_dataset(entry, ctx)
    assert (outcome.status, outcome.error_kind) == ("failed", "incomplete"), outcome.error
    assert stored(ctx, HOSPITALS) is None
    assert last_run(ctx, HOSPITALS).error_kind == "incomplete"


def test_a_forced_sync_of_pages_that_end_early_keeps_the_whole_list(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    [entry] = catalogue.select([HOSPITALS])
    assert sync_dataset(entry, ctx).status == "created"
    upstream.set_body(f"{entry.url}?page=2", EMPTY_PAGE)
    outcome = sync_dataset(entry, ctx, force=True, trigger="manual")
    assert (outcome.status, outcome.error_kind) == ("failed", "incomplete")
    row = stored(ctx, HOSPITALS)
    assert (row.version, len(row.options)) == (1, 59)


def test_an_api_key_the_http_client_refuses_is_not_in_the_stored_error(
    ctx: SyncContext, catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    [entry] = catalogue.select(["nhs_trusts"])
    monkeypatch.setenv("RCPCH_API_KEY", "s3cr3t-first-half\nsecond-half\n")
    outcome = sync_dataset(entry, ctx)
    assert (outcome.status, outcome.error_kind) == ("failed", "request")
    stored_error = last_run(ctx, entry.key).error_message
    for text in (outcome.error, stored_error):
        assert "s3cr3t" not in text and "second-half" not in text and "[redacted]" in text


def test_a_token_in_a_redirect_location_is_not_in_the_stored_error(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    [entry] = catalogue.select(["nhs_trusts"])
    upstream.script(entry.url, Scripted(status=302, headers={"Location": "https://ghp_T0KEN@evil.example.com/x"}))
    outcome = sync_dataset(entry, ctx)
    assert (outcome.status, outcome.error_kind) == ("failed", "redirect")
    assert "ghp_T0KEN" not in last_run(ctx, entry.key).error_message
    assert "https://[redacted]@evil.example.com/x" in outcome.error


BOROUGHS = "london_boroughs"


def first_ten_boroughs(upstream: Upstream, url: str) -> None:
    """An upstream change the guard rails hold: 23 of 33 codes removed."""
    items = json.loads(upstream.body_for(upstream.url_path(url)))
    upstream.set_body(url, json.dumps(items[:10]).encode())


@pytest.fixture
def boroughs(ctx: SyncContext, catalogue: Catalogue):
    [entry] = catalogue.select([BOROUGHS])
    assert sync_dataset(entry, ctx).status == "created"
    return entry


def test_force_still_sends_a_conditional_request_and_304_is_unchanged(ctx, boroughs, upstream: Upstream) -> None:
    outcome = sync_dataset(boroughs, ctx, force=True)
    assert outcome.status == "unchanged" and "304" in " ".join(outcome.warnings)
    assert upstream.hits(boroughs.url)[-1].get("If-None-Match")


def test_refetch_ignores_the_validators(ctx, boroughs, upstream: Upstream) -> None:
    outcome = sync_dataset(boroughs, ctx, force=True, refetch=True)
    assert outcome.status == "unchanged" and "304" not in " ".join(outcome.warnings)
    assert "If-None-Match" not in upstream.hits(boroughs.url)[-1]


@pytest.mark.parametrize("trigger", ["cli", "manual"])
def test_force_does_not_bypass_the_guard_rails(ctx, boroughs, upstream: Upstream, trigger: str) -> None:
    first_ten_boroughs(upstream, boroughs.url)
    outcome = sync_dataset(boroughs, ctx, trigger=trigger, force=True, refetch=True)
    assert outcome.status == "held" and "would remove 23 of 33" in outcome.error
    assert (stored(ctx, BOROUGHS).version, len(stored(ctx, BOROUGHS).options)) == (1, 33)


def test_accept_changes_applies_a_change_an_operator_rejected(ctx, boroughs, upstream: Upstream) -> None:
    from worker import review

    first_ten_boroughs(upstream, boroughs.url)
    assert sync_dataset(boroughs, ctx, force=True).status == "held"
    review.reject(ctx, BOROUGHS)
    assert sync_dataset(boroughs, ctx, force=True, refetch=True).error_kind == "rejected"
    outcome = sync_dataset(boroughs, ctx, force=True, refetch=True, accept_changes=True)
    assert (outcome.status, outcome.version, outcome.options) == ("updated", 2, 10)


def test_force_does_not_lift_a_rollback_pause(ctx, boroughs, upstream: Upstream) -> None:
    from worker import review

    upstream.set_body(boroughs.url, upstream.body_for(upstream.url_path(boroughs.url)).replace(b"Camden", b"Kamden"))
    assert sync_dataset(boroughs, ctx, force=True).status == "updated"
    review.rollback(ctx, BOROUGHS, 1)
    outcome = sync_dataset(boroughs, ctx, force=True)
    assert (outcome.status, outcome.error_kind) == ("skipped", "paused")
    assert f"datasync release {BOROUGHS}" in outcome.error

"""The health model on a real store with real syncs, with time moved by passing ``now``."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest

from models.types import utcnow
from tests.upstream import Scripted, Upstream
from worker import review
from worker.catalogue import Catalogue, CatalogueEntry
from worker.context import SyncContext
from worker.health import health_by_key, system_health
from worker.pipeline import sync_dataset
from worker.settings import Settings

BOROUGHS = "london_boroughs"


def only(catalogue: Catalogue, *entries: CatalogueEntry) -> Catalogue:
    return Catalogue(catalogue.path, entries)


def health(ctx: SyncContext, catalogue: Catalogue, key: str, hours_later: float = 0.0):
    now = utcnow() + timedelta(hours=hours_later)
    return health_by_key(ctx.sessions, catalogue, ctx.settings, now, [key])[key]


def test_a_synced_dataset_is_ok_then_stale_after_twice_its_frequency(ctx: SyncContext, catalogue: Catalogue) -> None:
    entry = catalogue.select([BOROUGHS])[0]
    assert entry.frequency_hours == 24
    assert health(ctx, catalogue, BOROUGHS).state == "never_synced"
    assert sync_dataset(entry, ctx).status == "created"
    fresh = health(ctx, catalogue, BOROUGHS, hours_later=1)
    assert (fresh.state, fresh.last_error) == ("ok", None)
    assert fresh.last_success_at and fresh.next_due_at == fresh.last_success_at + timedelta(hours=24)
    assert health(ctx, catalogue, BOROUGHS, hours_later=47.9).state == "ok"
    stale = health(ctx, catalogue, BOROUGHS, hours_later=48.1)
    assert stale.state == "stale" and "stale after 48 h" in stale.reason


def test_stale_after_hours_per_entry_overrides_the_default(ctx: SyncContext, catalogue: Catalogue) -> None:
    entry = dataclasses.replace(catalogue.select([BOROUGHS])[0], stale_after_hours=2)
    sync_dataset(entry, ctx)
    assert health(ctx, only(catalogue, entry), BOROUGHS, hours_later=1.9).state == "ok"
    assert health(ctx, only(catalogue, entry), BOROUGHS, hours_later=2.1).state == "stale"


def test_n_failed_attempts_in_a_row_make_it_failing_with_the_whole_error(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    entry = catalogue.select([BOROUGHS])[0]
    sync_dataset(entry, ctx)
    long_body = b"x" * 10 + b"<p>" + b"the upstream says why at the very end of a long page " * 5
    upstream.script(entry.url, *[Scripted(status=404, body=long_body)] * 3)
    for attempt in range(1, 4):
        sync_dataset(entry, ctx, force=True)
        assessed = health(ctx, catalogue, BOROUGHS)
        assert assessed.consecutive_failures == attempt
        assert assessed.state == ("failing" if attempt == ctx.settings.failing_after else "ok")
    assert assessed.last_error_kind and assessed.last_error and entry.url in assessed.last_error
    assert f"({assessed.last_error_kind})" in assessed.reason
    assert sync_dataset(entry, ctx, force=True).status == "unchanged"
    recovered = health(ctx, catalogue, BOROUGHS)
    assert (recovered.state, recovered.consecutive_failures, recovered.last_error) == ("ok", 0, None)


def test_failing_after_is_a_setting(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream) -> None:
    entry = catalogue.select([BOROUGHS])[0]
    upstream.script(entry.url, Scripted(status=404))
    sync_dataset(entry, ctx)
    assert health(ctx, catalogue, BOROUGHS).state == "never_synced"
    strict = ctx.settings.model_copy(update={"failing_after": 1})
    assert health_by_key(ctx.sessions, catalogue, strict, utcnow(), [BOROUGHS])[BOROUGHS].state == "failing"


def test_held_paused_and_disabled_win_over_time(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream) -> None:
    entry = catalogue.select([BOROUGHS])[0]
    original = json.loads(upstream.body_for(upstream.url_path(entry.url)) or b"[]")
    sync_dataset(entry, ctx)
    upstream.set_body(entry.url, json.dumps(original[:5]).encode())
    assert sync_dataset(entry, ctx, trigger="manual").status == "held"
    held = health(ctx, catalogue, BOROUGHS, hours_later=100)
    assert held.state == "held" and held.reason.startswith("would remove")
    assert held.last_error_kind == "held"
    review.reject(ctx, BOROUGHS)
    review.rollback(ctx, BOROUGHS, 1)
    paused = health(ctx, catalogue, BOROUGHS)
    assert paused.state == "paused" and "rolled back to version 1" in paused.reason and paused.next_due_at is None
    disabled = only(catalogue, dataclasses.replace(entry, enabled=False))
    assert health(ctx, disabled, BOROUGHS).state == "disabled"
    assert health(ctx, only(catalogue), BOROUGHS).reason == "not in the catalogue"


def test_system_health_names_each_part_that_is_down(settings: Settings) -> None:
    system = system_health(settings, None, utcnow())
    parts = {c.name: c for c in system.components}
    assert parts["store"].status == "ok"
    assert parts["broker"].status == "down" and "DATASYNC_BROKER_URL" in parts["broker"].detail
    assert parts["scheduler"].detail.startswith("no heartbeat recorded")
    assert system.status == "down"
    unreachable = system_health(settings, "redis://127.0.0.1:9/0", utcnow())
    assert {c.name: c.status for c in unreachable.components}["broker"] == "down"


@pytest.mark.redis
def test_a_reachable_broker_without_workers_is_degraded(settings: Settings, redis_server) -> None:
    import redis

    redis.Redis.from_url(redis_server.url()).flushall()
    system = system_health(settings.model_copy(update={"worker_ping_timeout": 0.3}), redis_server.url(), utcnow())
    parts = {c.name: c for c in system.components}
    assert parts["broker"].status == "ok" and system.queue_length == 0
    assert parts["workers"].status == "down" and "no worker answered" in parts["workers"].detail
    assert system.status == "degraded"


def test_stale_after_hours_is_checked_in_the_catalogue(tmp_path) -> None:
    from worker.catalogue import CatalogueError, load_catalogue

    entry = 'key = "x"\nname = "X"\ncategory = "rcpch"\nsource = "json_api"\nurl = "https://a.example/"\n'
    entry += 'code_field = "c"\nlabel_field = "l"\nfrequency_hours = 24\n'
    path = tmp_path / "catalogue.toml"
    path.write_text(f"[[datasets]]\n{entry}stale_after_hours = 6\n")
    assert load_catalogue(path).entries[0].stale_after == 6
    path.write_text(f"[[datasets]]\n{entry}")
    assert load_catalogue(path).entries[0].stale_after == 48
    path.write_text(f"[[datasets]]\n{entry}stale_after_hours = 0\n")
    with pytest.raises(CatalogueError, match="stale_after_hours"):
        load_catalogue(path)

"""Webhooks delivered to a real local receiver: signed, retried, one per transition, never in a sync's way."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr

from models.types import utcnow
from tests.receiver import SECRET, Receiver, verify
from tests.upstream import Scripted, Upstream
from worker import webhooks
from worker.catalogue import Catalogue
from worker.context import SyncContext
from worker.pipeline import sync_dataset
from worker.settings import Settings

KEY = "london_boroughs"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


@pytest.fixture
def hooked(ctx: SyncContext, receiver: Receiver) -> SyncContext:
    settings = ctx.settings.model_copy(
        update={"webhook_urls": receiver.url, "webhook_secret": SecretStr(SECRET), "webhook_backoff_seconds": 0.05}
    )
    return dataclasses.replace(ctx, settings=settings)


def test_each_transition_is_announced_once_signed(
    hooked: SyncContext, catalogue: Catalogue, upstream: Upstream, receiver: Receiver
) -> None:
    entry = catalogue.select([KEY])[0]
    assert sync_dataset(entry, hooked).status == "created"
    created = receiver.wait_for(1)[0]
    assert (created["type"], created["dataset"], created["changes"]["added"]) == ("list_changed", KEY, 33)
    upstream.script(entry.url, *[Scripted(status=404)] * 4)
    for _ in range(4):
        assert sync_dataset(entry, hooked, force=True).status == "failed"
    failing = receiver.wait_for(2)[1]
    assert failing["type"] == "failing" and failing["previous_state"] == "ok"
    assert failing["last_error"]["kind"] == "http_404" and entry.url in failing["last_error"]["message"]
    assert sync_dataset(entry, hooked, force=True).status == "unchanged"
    assert receiver.wait_for(3)[2]["type"] == "recovered"
    boroughs = json.loads(upstream.body_for(upstream.url_path(entry.url)) or b"[]")
    upstream.set_body(entry.url, json.dumps(boroughs[:3]).encode())
    assert sync_dataset(entry, hooked, trigger="manual").status == "held"
    held = receiver.wait_for(4)[3]
    assert held["type"] == "held" and held["changes"]["removed"] == 30 and len(held["changes"]["removed_codes"]) == 30
    assert all(verify(a) for a in receiver.attempts)
    assert [a["headers"]["X-Datasync-Event"] for a in receiver.attempts] == [
        "list_changed",
        "failing",
        "recovered",
        "held",
    ]


def test_time_alone_makes_a_stale_event_on_the_beat_scan(
    hooked: SyncContext, catalogue: Catalogue, receiver: Receiver
) -> None:
    entry = catalogue.select([KEY])[0]
    only = Catalogue(catalogue.path, (entry,))
    sync_dataset(entry, hooked)
    receiver.wait_for(1)
    webhooks.scan(hooked.sessions, only, hooked.settings, utcnow() + timedelta(hours=1))
    webhooks.scan(hooked.sessions, only, hooked.settings, utcnow() + timedelta(hours=49))
    webhooks.scan(hooked.sessions, only, hooked.settings, utcnow() + timedelta(hours=50))
    events = receiver.wait_for(2)
    assert [e["type"] for e in events] == ["list_changed", "stale"] and "stale after 48 h" in events[1]["reason"]


def test_failed_deliveries_are_retried_with_backoff(
    hooked: SyncContext, catalogue: Catalogue, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    sync_dataset(catalogue.select([KEY])[0], hooked)
    receiver.wait_for(1)
    assert [a["status"] for a in receiver.attempts] == [500, 500, 200]
    assert len({json.loads(a["body"])["id"] for a in receiver.attempts}) == 1  # the same event, redelivered


def test_an_unreachable_receiver_never_fails_or_slows_a_sync(ctx: SyncContext, catalogue: Catalogue) -> None:
    settings = ctx.settings.model_copy(
        update={
            "webhook_urls": "http://127.0.0.1:9/hook",
            "webhook_secret": SecretStr(SECRET),
            "webhook_backoff_seconds": 30,
        }
    )
    started = time.monotonic()
    assert sync_dataset(catalogue.select([KEY])[0], dataclasses.replace(ctx, settings=settings)).status == "created"
    assert time.monotonic() - started < 10


def test_webhooks_are_off_unless_configured_and_need_a_secret() -> None:
    assert Settings().webhook_urls == ""
    with pytest.raises(ValueError, match="DATASYNC_WEBHOOK_SECRET"):
        Settings(webhook_urls="https://hooks.example/x")
    with pytest.raises(ValueError, match="not an http"):
        Settings(webhook_urls="ftp://hooks.example/x", webhook_secret="x")

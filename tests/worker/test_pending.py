"""Pending marks on a real Redis: set when a message is queued, cleared at its start, TTL tracking its ETA."""

from __future__ import annotations

import pytest
import redis

from worker import pending
from worker.settings import get_settings

pytestmark = pytest.mark.redis


def ttl_of(broker: redis.Redis, key: str) -> int:
    return broker.pttl(f"datasync:pending:{key}")


def test_a_mark_lives_for_its_countdown_plus_one_scan_interval(broker: redis.Redis) -> None:
    assert pending.mark({"a": 5.0, "b": 100.0}) == ["a", "b"]
    assert 34_000 < ttl_of(broker, "a") <= 35_000  # 5 s countdown + 30 s (the shipped scan interval)
    assert 129_000 < ttl_of(broker, "b") <= 130_000


def test_a_live_mark_is_not_marked_again_until_its_task_starts(broker: redis.Redis) -> None:
    assert pending.mark({"a": 0.0}) == ["a"]
    assert pending.mark({"a": 0.0, "b": 0.0}) == ["b"]
    pending.clear("a")
    assert ttl_of(broker, "a") == -2
    assert pending.mark({"a": 0.0}) == ["a"]


def test_hold_replaces_an_older_mark_with_the_new_countdown(broker: redis.Redis) -> None:
    pending.mark({"a": 0.0})
    pending.hold("a", 600.0)
    assert 629_000 < ttl_of(broker, "a") <= 630_000
    pending.hold("a", -3.0)  # an ETA already past: the late margin alone
    assert 29_000 < ttl_of(broker, "a") <= 30_000


def test_a_short_scan_interval_still_leaves_ten_seconds_for_a_late_start(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATASYNC_BEAT_INTERVAL_SECONDS", "1")
    get_settings.cache_clear()
    assert pending.ttl_ms(0.5) == 10_500


def test_without_a_redis_broker_there_are_no_marks() -> None:
    assert not pending.available()
    assert pending.mark({"a": 0.0, "b": 1.0}) == ["a", "b"]  # every message is sent: nothing can be told apart
    pending.hold("a", 1.0)
    pending.clear("a")

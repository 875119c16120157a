"""Fixtures the worker tests share."""

from __future__ import annotations

import pytest
import redis

from tests.servers import RedisServer
from worker.settings import get_settings


@pytest.fixture
def broker(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    """The test Redis as datasync's broker, emptied."""
    monkeypatch.setenv("DATASYNC_BROKER_URL", redis_server.url())
    get_settings.cache_clear()
    client = redis.Redis.from_url(redis_server.url())
    client.flushall()
    return client

"""A real uvicorn server on a free port over a real store that real syncs filled: one dataset ok,
one failing, one held, one never synced, plus rows people own; keys of every kind; a movable clock."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from models.schema import Dataset
from models.types import utcnow
from tests.upstream import Scripted, Upstream
from worker.apikeys import create_key, revoke_key
from worker.catalogue import Catalogue
from worker.context import SyncContext
from worker.embedded import free_port
from worker.pipeline import sync_dataset
from worker.settings import Settings

OK, FAILING, HELD, NEVER = "nhs_england_regions", "ethnic_category", "london_boroughs", "zygosity_status"
PRIVATE, SHARED = "our_custom_list", "shared_curated_list"


class MovableClock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def shift(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


class ApiServer:
    def __init__(self, app: FastAPI, log_level: str = "warning") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level=log_level, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
        return self.call("GET", path, key, **kwargs)

    def post(self, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
        return self.call("POST", path, key, **kwargs)


@dataclass
class Keys:
    viewer: str
    operator: str
    expired: str
    revoked: str


@dataclass
class Deployment:
    catalogue: Catalogue
    settings: Settings
    ctx: SyncContext
    clock: MovableClock
    keys: Keys
    extra: dict[str, Any] = field(default_factory=dict)

    def serve(self, log_level: str = "warning", **overrides: Any) -> ApiServer:
        settings = self.settings.model_copy(update=overrides)
        return ApiServer(create_app(settings, self.catalogue, self.clock), log_level)


def fill_store(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream) -> Catalogue:
    """Real syncs into the store: ok, failing (3 failed attempts), held, never synced; people's rows."""
    chosen = Catalogue(catalogue.path, tuple(catalogue.select([OK, FAILING, HELD, NEVER])))
    entries = chosen.by_key()
    for key in (OK, FAILING, HELD):
        assert sync_dataset(entries[key], ctx).status == "created"
    upstream.script(entries[FAILING].url, *[Scripted(status=404)] * 3)
    for _ in range(3):
        assert sync_dataset(entries[FAILING], ctx, force=True).status == "failed"
    boroughs = json.loads(upstream.body_for(upstream.url_path(entries[HELD].url)) or b"[]")
    upstream.set_body(entries[HELD].url, json.dumps(boroughs[:3]).encode())
    assert sync_dataset(entries[HELD], ctx, trigger="manual").status == "held"
    with ctx.sessions.begin() as session:
        parent = session.query(Dataset).filter_by(key=OK).one()
        for key, is_global, tags in ((PRIVATE, False, ["secret"]), (SHARED, True, ["curated", "regions"])):
            session.add(
                Dataset(
                    key=key,
                    name=key.replace("_", " ").title(),
                    description="made by a person",
                    category="user_created",
                    source_type="manual",
                    is_custom=not is_global,
                    is_global=is_global,
                    parent_id=parent.id if not is_global else None,
                    organization_id=5,
                    tags=tags,
                    options={"A": "Alpha"},
                )
            )
    return chosen


@pytest.fixture
def deployment(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream, settings: Settings) -> Deployment:
    chosen = fill_store(ctx, catalogue, upstream)
    now = utcnow()
    _, viewer = create_key(ctx.sessions, "grafana", "viewer", None, now)
    _, operator = create_key(ctx.sessions, "on-call", "operator", None, now)
    _, expired = create_key(ctx.sessions, "old", "viewer", now + timedelta(seconds=1), now)
    revoked_key, revoked = create_key(ctx.sessions, "leaked", "operator", None, now)
    revoke_key(ctx.sessions, str(revoked_key.id), now)
    clock = MovableClock()
    clock.shift(seconds=2)  # the short-lived key has expired by "now"
    return Deployment(chosen, settings, ctx, clock, Keys(viewer, operator, expired, revoked))


@pytest.fixture
def api(deployment: Deployment) -> Iterator[ApiServer]:
    with deployment.serve() as server:
        yield server

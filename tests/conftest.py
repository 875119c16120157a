"""Shared fixtures: a real local upstream, and stores on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from models.db import get_engine, migrate, session_factory
from tests.api_upstream import ApiUpstream
from tests.servers import PostgresServer, RedisServer
from tests.upstream import Upstream
from worker.catalogue import Catalogue, load_catalogue
from worker.context import SyncContext
from worker.settings import DEFAULT_CATALOGUE, Settings, get_settings

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Property tests judge outputs, not speed: on a busy 2-core CI machine an example may take longer
# than hypothesis's default 200 ms deadline without anything being wrong.
hypothesis_settings.register_profile("datasync", deadline=None)
hypothesis_settings.load_profile("datasync")


# The tests that start a fleet of scaled-timer workers and beat (the fault suite): in a parallel run
# they take turns on one pytest worker, so two fleets never compete for the 2 cores.
FLEET = (
    "tests/reliability/test_kills.py::",
    "tests/reliability/test_flapping.py::",
    "tests/reliability/test_outages.py::",
    "tests/reliability/test_concurrency.py::test_a_storm_of_manual_resyncs_runs_one_at_a_time_and_makes_one_version",
    "tests/reliability/test_recovery.py::test_with_shipped_timers_a_manual_resync_lost_with_its_worker_runs_within_two_minutes",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` with FLEET as the one group, which goes first (the largest scope).

    xdist 3.8 groups ``xdist_group`` marks by rewriting node ids, which pytest 9 no longer reads,
    so those marks have no effect here; this schedules as loadgroup would.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FleetsTakeTurns(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "fleet" if nodeid.startswith(FLEET) else nodeid

    return FleetsTakeTurns(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first: with workers in parallel (``scripts/test``) they start at once instead of
    becoming the tail of the run. The order is otherwise kept, and is the same in every worker."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def expected_result(key: str) -> dict:
    return json.loads((FIXTURES / "expected" / f"{key}.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's DATASYNC_* variables or a cached Settings."""
    for name in list(os.environ):
        if name.startswith("DATASYNC_") or name == "RCPCH_API_KEY":
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store migrated per session (per xdist worker), copied for each test: migrating
    a SQLite file takes about half a second, copying it a few milliseconds."""
    path = tmp_path_factory.mktemp("migrated") / "store.db"
    url = f"sqlite:///{path}"
    migrate(url)
    get_engine(url).dispose()
    return path


def sqlite_copy(template: Path, path: Path) -> str:
    """A copy of the migrated ``template`` at ``path`` (SQLite's backup API: WAL contents included)."""
    source, target = sqlite3.connect(template), sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated store: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        url = sqlite_copy(request.getfixturevalue("migrated_sqlite"), tmp_path / "store.db")
    else:
        url = request.getfixturevalue("postgres_server").new_database()
        migrate(url)
    yield url
    get_engine(url).dispose()  # close pooled connections, or hundreds of test databases exhaust PostgreSQL's clients


@pytest.fixture
def settings(store_url: str, upstream: Upstream) -> Settings:
    return Settings(
        database_url=store_url, url_rewrites=upstream.rewrites(), host_rate_per_second=1000, host_concurrency=8
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[SyncContext]:
    context = SyncContext.from_settings(settings)
    yield context
    context.close()


@pytest.fixture
def sessions(ctx: SyncContext):
    return ctx.sessions


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return load_catalogue(DEFAULT_CATALOGUE)


@pytest.fixture
def sqlite_sessions(tmp_path: Path, migrated_sqlite: Path):
    return session_factory(sqlite_copy(migrated_sqlite, tmp_path / "unit.db"))


@pytest.fixture
def apis() -> Iterator[ApiUpstream]:
    """The local FHIR / Charitylog / DataPress / ArcGIS emulation (``tests/api_upstream.py``)."""
    with ApiUpstream() as server:
        yield server

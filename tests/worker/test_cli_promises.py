"""A `datasync sync` SIGKILLed while it waits out a retry: its promise is read as broken (by `status`, `runs`
and the runs API alike), then closed by the scan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api.app import create_app
from models.schema import SyncRun
from models.types import utcnow
from tests.api.conftest import ApiServer
from tests.upstream import Scripted, Upstream
from tests.worker.celery_harness import write_catalogue
from worker import cli_promises, tasks
from worker.apikeys import create_key
from worker.catalogue import load_catalogue
from worker.settings import Settings, get_settings

KEY = "nhs_england_regions"


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The store, upstream and a one-entry catalogue, for `datasync` processes and the scan in this one."""
    env = {
        "DATASYNC_DATABASE_URL": settings.database_url,
        "DATASYNC_URL_REWRITES": settings.url_rewrites,
        "DATASYNC_CATALOGUE": str(write_catalogue(tmp_path / "catalogue.toml", [KEY])),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    tasks._process.clear()
    yield {**os.environ, **env}
    tasks._process.clear()


def runs(sessions) -> list[SyncRun]:
    with sessions() as session:
        return list(session.scalars(select(SyncRun).where(SyncRun.dataset_key == KEY).order_by(SyncRun.id)))


def datasync_json(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def promises(env: dict[str, str], api: ApiServer, key: str) -> dict[str, bool]:
    """``will_retry`` of the newest run as each reader shows it: `status`, `runs` and the runs API."""
    [row] = [row for row in datasync_json(env, "status") if row["key"] == KEY]
    listed = api.get(f"/api/sync/runs?dataset={KEY}", key)
    assert listed.status_code == 200, listed.text
    return {
        "status": row["last_run"]["will_retry"],
        "runs": datasync_json(env, "runs", KEY)[0]["will_retry"],
        "api": listed.json()["results"][0]["will_retry"],
    }


@pytest.fixture
def api(cli_env: dict[str, str], settings: Settings, sessions) -> Iterator[tuple[ApiServer, str]]:
    """The runs HTTP API over the same store, and a viewer's key to read it with."""
    _, key = create_key(sessions, "viewer", "viewer", None, utcnow())
    with ApiServer(create_app(settings, load_catalogue(Path(cli_env["DATASYNC_CATALOGUE"])))) as server:
        yield server, key


def scan_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks.sync_dataset_task, "apply_async", lambda **options: None)
    tasks.sync_due_task.apply().get()


def test_a_killed_datasync_sync_leaves_no_retry_promised(
    cli_env: dict[str, str], upstream: Upstream, sessions, api: tuple[ApiServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.fault = lambda path: Scripted(503)
    env = {**cli_env, "DATASYNC_RETRY_BACKOFF_SECONDS": "600"}  # the wait: 15-30 s (DATASYNC_SYNC_RETRY_MAX_SECONDS)
    sync = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "sync", KEY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not [r for r in runs(sessions) if r.status == "failed" and r.will_retry]:
            assert sync.poll() is None and time.monotonic() < deadline, "no failed attempt promising a retry"
            time.sleep(0.2)
        assert promises(cli_env, *api) == {"status": True, "runs": True, "api": True}  # alive, waiting: it stands
        scan_closes(monkeypatch)
        assert [(r.status, r.will_retry) for r in runs(sessions)] == [("failed", True)]
    finally:
        os.kill(sync.pid, signal.SIGKILL)
        sync.wait(30)
    assert promises(cli_env, *api) == {"status": False, "runs": False, "api": False}  # broken at once, without beat
    assert [r.will_retry for r in runs(sessions)] == [True]
    scan_closes(monkeypatch)
    [run] = runs(sessions)
    assert (run.status, run.attempt, run.will_retry) == ("failed", 1, False)


def test_a_promise_from_another_host_is_broken_once_its_retry_is_long_overdue(settings: Settings) -> None:
    finished = utcnow()
    run = SyncRun(trigger="cli", status="failed", finished_at=finished, will_retry=True, worker="elsewhere:1:ab:2")
    longest = timedelta(seconds=settings.sync_retry_max_seconds + cli_promises.OVERDUE_MARGIN_SECONDS)
    assert not cli_promises.broken(run, finished + longest, settings)
    assert cli_promises.broken(run, finished + longest + timedelta(seconds=1), settings)
    run.trigger = "schedule"  # a broker-queued retry is judged by its pending mark and lease instead
    assert not cli_promises.broken(run, finished + longest * 10, settings)

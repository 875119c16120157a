"""The monitoring commands as an operator runs them: status filters, --system/doctor, runs, apikey, serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests
from typer.testing import CliRunner

from tests.upstream import Scripted, Upstream
from worker.catalogue import Catalogue
from worker.cli import app
from worker.context import SyncContext
from worker.embedded import free_port
from worker.pipeline import sync_dataset
from worker.settings import Settings, get_settings

runner = CliRunner()


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATASYNC_DATABASE_URL", settings.database_url)

    def invoke(*args: str, code: int = 0) -> str:
        get_settings.cache_clear()
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result.output

    return invoke


@pytest.fixture
def synced(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream) -> None:
    regions, ethnic = catalogue.select(["nhs_england_regions", "ethnic_category"])
    sync_dataset(regions, ctx)
    upstream.script(ethnic.url, *[Scripted(status=404)] * 3)
    for _ in range(3):
        sync_dataset(ethnic, ctx, force=True)


def test_status_filters_by_state_and_category_and_shows_the_whole_error(cli, synced) -> None:
    rows = json.loads(cli("status", "--json"))
    states = {row["key"]: row["state"] for row in rows}
    assert states["nhs_england_regions"] == "ok" and states["ethnic_category"] == "failing"
    assert states["zygosity_status"] == "never_synced"
    failing = json.loads(cli("status", "--state", "failing", "--json"))
    assert [row["key"] for row in failing] == ["ethnic_category"]
    assert failing[0]["last_error"]["message"].endswith("ethnic_category.html: HTTP 404 Not Found")
    assert {row["category"] for row in json.loads(cli("status", "--category", "rcpch", "--json"))} == {"rcpch"}
    table = cli("status", "--state", "failing")
    assert "the last 3 attempts failed (http_404)" in table and "HTTP 404 Not Found" in table
    assert "nhs_england_regions" not in table
    assert "expected one of ok, stale" in cli("status", "--state", "bogus", code=2)


def test_system_and_doctor_exit_1_naming_what_is_down(cli) -> None:
    output = cli("status", "--system", code=1)
    assert "no broker configured" in output and "reachable, at the newest schema" in output
    report = json.loads(cli("doctor", "--json", code=1))
    assert report["status"] == "down" and report["broker"]["status"] == "down" and report["store"]["status"] == "ok"


def test_runs_lists_history_with_filters(cli, synced) -> None:
    runs = json.loads(cli("runs", "--json"))
    assert len(runs) == 4 and runs == sorted(runs, key=lambda r: -r["id"])
    failed = json.loads(cli("runs", "ethnic_category", "--status", "failed", "--limit", "2", "--json"))
    assert len(failed) == 2 and {r["error_kind"] for r in failed} == {"http_404"}
    assert {r["bytes_fetched"] for r in failed} == {None} and all(r["bytes_fetched"] > 0 for r in runs[-1:])
    assert json.loads(cli("runs", "--since", "1h", "--json")) == runs
    assert "2 of 3 run(s)" in cli("runs", "ethnic_category", "--limit", "2")
    assert "give an ISO date/time" in cli("runs", "--since", "yesterday-ish", code=2)
    assert "expected one of" in cli("runs", "--status", "nope", code=2)


def test_apikey_create_list_revoke_never_show_the_secret_again(cli) -> None:
    created = json.loads(cli("apikey", "create", "grafana", "--role", "viewer", "--expires", "2099-01-31", "--json"))
    raw = created["key"]
    assert raw.startswith("dsk_") and len(raw) > 40 and created["prefix"] == raw[:12]
    listed = cli("apikey", "list", "--json")
    assert raw not in listed and raw[12:30] not in listed
    rows = json.loads(listed)
    assert rows[0]["expires_at"].startswith("2099-01-31") and rows[0]["revoked_at"] is None
    assert "revoked key" in cli("apikey", "revoke", created["prefix"])
    assert json.loads(cli("apikey", "list", "--json"))[0]["revoked_at"]
    assert "role must be one of viewer, operator" in cli("apikey", "create", "x", "--role", "admin", code=2)
    assert "already past" in cli("apikey", "create", "x", "--expires", "2001-01-01", code=2)
    assert "no single API key" in cli("apikey", "revoke", "dsk_nothing", code=2)


def test_serve_answers_health_and_datasets(settings: Settings) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASYNC_")}
    env["DATASYNC_DATABASE_URL"] = settings.database_url
    server = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/api/health", timeout=10)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, "datasync serve did not start"
                time.sleep(0.1)
        assert health.status_code == 503 and health.json()["broker"]["status"] == "down"
        assert requests.get(f"http://127.0.0.1:{port}/api/datasets/", timeout=10).json()["count"] == 0
    finally:
        server.terminate()
        server.wait(30)

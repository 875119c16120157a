"""The ``datasync`` command as an operator runs it: real processes, real local upstream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from models.db import session_factory
from models.schema import SyncRun
from models.types import utcnow
from tests.conftest import expected_result
from tests.upstream import Upstream
from tests.worker.celery_harness import write_catalogue
from worker.catalogue import Catalogue


def datasync(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 300):
    base = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(store_url: str, upstream: Upstream) -> dict[str, str]:
    return {
        "DATASYNC_DATABASE_URL": store_url,
        "DATASYNC_URL_REWRITES": upstream.rewrites(),
        "DATASYNC_HOST_RATE_PER_SECOND": "200",
        "DATASYNC_HOST_CONCURRENCY": "8",
    }


def test_sync_all_then_again(env: dict[str, str], catalogue: Catalogue) -> None:
    first = datasync(env, "sync", "--json")
    assert first.returncode == 0, first.stderr
    outcomes = json.loads(first.stdout)
    assert len(outcomes) == 55 and {o["status"] for o in outcomes} == {"created"}
    status = {row["key"]: row for row in json.loads(datasync(env, "status", "--json").stdout)}
    for entry in catalogue.entries:
        assert status[entry.key]["options_count"] == len(expected_result(entry.key)["options"])
        assert status[entry.key]["last_run"]["status"] == "created"
    second = datasync(env, "sync")
    assert second.returncode == 0
    assert "skipped: 55" in second.stdout and "created" not in second.stdout.split("skipped")[-1]
    forced = json.loads(datasync(env, "sync", "--force", "--json").stdout)
    assert {o["status"] for o in forced} == {"unchanged"} and {o["version"] for o in forced} == {1}


def test_sync_exit_code_and_summary_on_failure(env: dict[str, str], upstream: Upstream) -> None:
    env = {**env, "DATASYNC_URL_REWRITES": f"https://api.rcpch.ac.uk={upstream.base_url}/missing"}
    result = datasync(env, "sync", "--category", "rcpch")
    assert result.returncode == 1
    assert "failed: 7" in result.stdout
    assert "HTTP 404" in result.stdout


def test_dry_run_lists_codes_and_writes_nothing(env: dict[str, str]) -> None:
    result = datasync(env, "sync", "ethnic_category", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would_create" in result.stdout and "+ A: " in result.stdout
    status = {row["key"]: row for row in json.loads(datasync(env, "status", "--json").stdout)}
    assert status["ethnic_category"]["version"] is None


def test_malformed_catalogue_fails_before_any_fetch(env: dict[str, str], tmp_path: Path, upstream: Upstream) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[datasets]]\nkey = "a"\nname = "A"\ncategory = "nhs_dd"\nsource = "nhs_dd"\n'
        'url = "https://www.datadictionary.nhs.uk/x.html"\n\n[[datasets]]\nkey = "b"\nname = "B"\n'
        'category = "rcpch"\nsource = "json_api"\nurl = "https://api.rcpch.ac.uk/x/"\nlabel_field = "name"\n'
    )
    result = datasync(env, "sync", "--catalogue", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "entry 2 (key 'b')" in result.stderr and "code_field" in result.stderr
    assert upstream.requests == []


def test_unknown_key_is_an_error(env: dict[str, str]) -> None:
    result = datasync(env, "sync", "no_such_list")
    assert result.returncode == 2 and "no_such_list" in result.stderr


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_run_keeps_datasets_in_sync_on_the_embedded_default(
    env: dict[str, str], upstream: Upstream, tmp_path: Path
) -> None:
    catalogue = write_catalogue(
        tmp_path / "catalogue.toml", ["nhs_england_regions", "ethnic_category"], frequency_hours=0.001
    )
    regions = "https://api.rcpch.ac.uk/nhs-organisations/v1/nhs_england_regions/extended/"
    run_env = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")}
    run_env.update(
        env,
        DATASYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'datasync.db'}",
        DATASYNC_CATALOGUE=str(catalogue),
        DATASYNC_BEAT_INTERVAL_SECONDS="1",
        DATASYNC_DUE_JITTER_SECONDS="0.2",
        PYTHONUNBUFFERED="1",  # the log below is read while the process runs
    )
    log = tmp_path / "run.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run"], env=run_env, cwd=tmp_path, stdout=output, stderr=output
        )
    try:

        def status() -> dict:
            result = datasync(run_env, "status", "--json", cwd=tmp_path)
            return {row["key"]: row for row in json.loads(result.stdout)} if result.returncode == 0 else {}

        deadline = time.monotonic() + 60
        while not all((status().get(k) or {}).get("version") == 1 for k in ("nhs_england_regions", "ethnic_category")):
            assert time.monotonic() < deadline, f"datasets never synced\n{log.read_text()[-6000:]}"
            time.sleep(0.5)
        body = upstream.body_for(upstream.url_path(regions)).replace(b'"London"', b'"Greater London"')
        upstream.set_body(regions, body)
        while status()["nhs_england_regions"]["version"] != 2:
            assert time.monotonic() < deadline + 30, f"the upstream change never landed\n{log.read_text()[-6000:]}"
            time.sleep(0.5)
        manual = datasync(run_env, "resync", "ethnic_category", "--force", "--wait", cwd=tmp_path)
        assert manual.returncode == 0, manual.stdout + manual.stderr
        assert (tmp_path / ".datasync" / "broker_url").is_file()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0, log.read_text()[-6000:]
    assert not (tmp_path / ".datasync" / "broker_url").exists()


def test_configuration_errors_exit_2_naming_the_variable(env: dict[str, str]) -> None:
    result = datasync({**env, "DATASYNC_HOST_LIMITS": "www.datadictionary.nhs.uk=0:2"}, "status")
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "DATASYNC_HOST_LIMITS" in result.stderr
    assert "Traceback" not in result.stderr


def test_error_messages_keep_square_brackets_and_are_never_wrapped(env: dict[str, str], tmp_path: Path) -> None:
    deep = tmp_path / ("long-directory-name-" * 5)
    deep.mkdir()
    empty = deep / "empty.toml"
    empty.write_text("# nothing here\n")
    result = datasync(env, "sync", "--catalogue", str(empty))
    assert result.returncode == 2
    assert f"{empty}: no [[datasets]] entries" in result.stderr


def test_prune_deletes_old_runs_and_refuses_when_retention_is_off(env: dict[str, str]) -> None:
    sessions = session_factory(env["DATASYNC_DATABASE_URL"])
    with sessions.begin() as session:
        session.add(SyncRun(dataset_key="a", trigger="cli", status="skipped", started_at=utcnow() - timedelta(days=40)))
        session.add(SyncRun(dataset_key="a", trigger="cli", status="skipped", started_at=utcnow()))
    pruned = datasync(env, "prune", "--older-than-days", "30", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["deleted"] == 1
    refused = datasync({**env, "DATASYNC_RUN_RETENTION_DAYS": "0"}, "prune")
    assert refused.returncode == 2 and "DATASYNC_RUN_RETENTION_DAYS is 0" in refused.stderr

"""Many re-syncs of one dataset at once, and the SQLite embedded default under two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db import session_factory
from models.schema import Dataset
from tests.conftest import expected_result
from tests.reliability.conftest import assert_versions_consistent, make_fleet, runs_of, shipped_keys
from tests.servers import RedisServer
from tests.upstream import Upstream
from tests.worker.celery_harness import wait_until, write_catalogue
from tests.worker.test_cli import datasync

pytestmark = [pytest.mark.slow, pytest.mark.redis]
REGIONS = "https://api.rcpch.ac.uk/nhs-organisations/v1/nhs_england_regions/extended/"
STORM = int(os.environ.get("FAULT_STORM", "1000"))
FIRE_AND_WAIT = """
import json, sys
from worker.tasks import enqueue_syncs
results = enqueue_syncs([sys.argv[1]] * int(sys.argv[2]), False, "manual")
print(json.dumps([result.get(timeout=600)["status"] for result in results]))
"""


@pytest.mark.postgres
def test_a_storm_of_manual_resyncs_runs_one_at_a_time_and_makes_one_version(
    pg_url: str, redis_server: RedisServer, upstream: Upstream, tmp_path: Path, results: dict[str, Any]
) -> None:
    fleet = make_fleet(pg_url, redis_server.url(), upstream, tmp_path, ["nhs_england_regions"])
    try:
        fleet.worker("w1")
        fleet.worker("w2")
        assert fleet.cli("resync", "nhs_england_regions", "--wait").returncode == 0, fleet.logs()
        changed = upstream.body_for(upstream.url_path(REGIONS)).replace(b'"London"', b'"Greater London"')
        upstream.set_body(REGIONS, changed)
        command = [sys.executable, "-c", FIRE_AND_WAIT, "nhs_england_regions", str(STORM)]
        with ThreadPoolExecutor(5) as pool:
            storm = pool.submit(subprocess.run, command, env=fleet.env, capture_output=True, text=True, timeout=900)
            clis = [pool.submit(fleet.cli, "sync", "nhs_england_regions", "--force") for _ in range(4)]
            fired = storm.result()
            cli_codes = [cli.result().returncode for cli in clis]
    finally:
        fleet.stop()
    assert fired.returncode == 0, fired.stderr[-3000:]
    statuses = Counter(json.loads(fired.stdout))
    assert cli_codes == [0, 0, 0, 0]
    runs = [r for r in runs_of(pg_url) if r.status != "skipped"]
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.started_at >= earlier.finished_at, "two syncs of one dataset overlapped"
    with session_factory(pg_url)() as session:
        dataset = session.scalars(select(Dataset)).one()
    assert dataset.version == 2 and "Greater London" in dataset.options.values()
    assert_versions_consistent(pg_url)
    results.update(
        resync_tasks=STORM,
        cli_syncs=len(clis),
        task_outcomes=dict(statuses),
        syncs_that_fetched=len(runs),
        new_versions=dataset.version - 1,
    )


def test_sqlite_embedded_run_and_a_concurrent_sync_never_report_a_locked_database(
    upstream: Upstream, tmp_path: Path, results: dict[str, Any]
) -> None:
    keys = shipped_keys(20)
    catalogue = write_catalogue(tmp_path / "catalogue.toml", keys, frequency_hours=0.001)
    env = {
        "DATASYNC_CATALOGUE": str(catalogue),
        "DATASYNC_URL_REWRITES": upstream.rewrites(),
        "DATASYNC_BEAT_INTERVAL_SECONDS": "1",
        "DATASYNC_DUE_JITTER_SECONDS": "0.5",
        "DATASYNC_HOST_RATE_PER_SECOND": "50",
        "DATASYNC_HOST_CONCURRENCY": "4",
    }
    base = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")}
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run", "--concurrency=2"],
        env={**base, **env},
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    store = f"sqlite:///{tmp_path / 'datasync.db'}"
    try:
        started = lambda: (tmp_path / "datasync.db").exists() and synced(store) > 3  # noqa: E731
        wait_until(started, 120, "run's first syncs", _Logs(log))
        outputs = [datasync(env, "sync", "--force", "--jobs", "4", cwd=tmp_path) for _ in range(3)]
    finally:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(60)
        log.close()
    run_log = (tmp_path / "run.log").read_text()
    for output in outputs:
        assert output.returncode == 0, output.stdout[-2000:] + output.stderr[-2000:]
        assert "database is locked" not in output.stdout + output.stderr
    assert "database is locked" not in run_log
    # A dataset busy in `run` at each CLI pass and re-queued when `run` stopped is not synced yet;
    # one more pass with nothing else running must then complete every list exactly.
    final = datasync(env, "sync", cwd=tmp_path)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    with session_factory(store)() as session:
        stored = {d.key: d.options for d in session.scalars(select(Dataset))}
    assert all(stored[key] == expected_result(key)["options"] for key in keys)
    assert_versions_consistent(store)
    runs = runs_of(store)
    results.update(
        cli_syncs=len(outputs),
        runs=len(runs),
        by_trigger=dict(Counter(r.trigger for r in runs if r.status != "skipped")),
        failed=sum(r.status == "failed" for r in runs),
    )
    assert not [r for r in runs if r.status == "failed"]


def synced(store_url: str) -> int:
    try:
        return sum(r.status != "skipped" for r in runs_of(store_url))
    except Exception:  # the schema may not exist yet while `run` migrates
        return 0


class _Logs:
    """Enough of the harness interface for wait_until's failure message."""

    def __init__(self, log: Any) -> None:
        self.path = Path(log.name)

    def logs(self) -> str:
        return self.path.read_text()[-4000:]

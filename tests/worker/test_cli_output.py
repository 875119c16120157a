"""What ``datasync sync`` prints when its output is a pipe or a log, not a terminal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.upstream import Upstream
from tests.worker.celery_harness import write_catalogue
from tests.worker.test_cli import datasync

KEYS = ["ethnic_category", "nhs_trusts", "nhs_england_regions"]


@pytest.fixture
def pipe_env(store_url: str, upstream: Upstream, tmp_path: Path) -> dict[str, str]:
    return {
        "DATASYNC_DATABASE_URL": store_url,
        "DATASYNC_URL_REWRITES": upstream.rewrites(),
        "DATASYNC_HOST_RATE_PER_SECOND": "200",
        "DATASYNC_CATALOGUE": str(write_catalogue(tmp_path / "catalogue.toml", KEYS)),
    }


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_one_progress_line_per_finished_dataset_then_one_line_when_all_fresh(pipe_env: dict[str, str]) -> None:
    first = datasync(pipe_env, "sync")
    assert first.returncode == 0, first.stderr
    progress = first.stderr.splitlines()
    assert sorted(re.findall(r"^\[(\d)/3\] ", first.stderr, re.MULTILINE)) == ["1", "2", "3"]
    assert sorted(line.split("] ")[1].split(":")[0] for line in progress) == sorted(KEYS)
    assert all(": created, version 1, " in line for line in progress)
    assert first.stdout.splitlines()[-1] == "created: 3  failed: 0"

    again = datasync(pipe_env, "sync")
    assert again.returncode == 0
    assert again.stderr == ""
    assert again.stdout.splitlines() == [
        "skipped: 3  failed: 0  (3 fresh: synced within their frequency; --force syncs anyway)"
    ]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_each_error_is_printed_once_on_one_line(pipe_env: dict[str, str], upstream: Upstream) -> None:
    env = {**pipe_env, "DATASYNC_URL_REWRITES": f"https://api.rcpch.ac.uk={upstream.base_url}/missing"}
    result = datasync(env, "sync", "nhs_trusts")
    assert result.returncode == 1
    assert re.fullmatch(r"\[1/1\] nhs_trusts: failed \(\w+\)\n", result.stderr)
    errors = [line for line in result.stdout.splitlines() if line.startswith("nhs_trusts: ")]
    assert len(errors) == 1 and "HTTP 404" in errors[0]
    assert (result.stdout + result.stderr).count("HTTP 404") == 1

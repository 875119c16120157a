"""The benchmark runner: the bound it judges the mixed-host run by, and a smoke run of every section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import mixed_summary
from benchmarks.source import NHS_HOST, RCPCH_HOST


def test_the_mixed_host_bound_counts_the_politeness_margin() -> None:
    runs = [
        {"wall_s": wall, "statuses": {"created": 64}, "requests": {NHS_HOST: 57, RCPCH_HOST: 9}, "peak_per_s": {}}
        for wall in (31.0, 33.0, 32.0)
    ]
    runs = [run | {"peak_per_s": {NHS_HOST: 2, RCPCH_HOST: 2}} for run in runs]
    summary = mixed_summary(runs, "CLI")
    assert summary["busiest"] == NHS_HOST
    assert summary["nominal_s"] == pytest.approx(57 / 2)  # the 28.5 s
    assert summary["effective_s"] == pytest.approx(57 * 1.1 / 2)  # starts spaced (1 + 0.1) / 2 s apart
    assert summary["wall_s"] == 32.0
    assert summary["result"] == "64 created"


@pytest.mark.slow
def test_a_quick_run_writes_every_section(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    text = output.read_text(encoding="utf-8")
    for heading in ("## Targets (issue 11)", "## Scale", "## Mixed hosts", "## Threads", "## NHS DD parse rate"):
        assert heading in text
    for row in ("| sqlite | CLI | 20 | full sync (first) |", "| postgresql | Celery ×2 | 20 | 5 % changed |"):
        assert row in text
    assert "mixed hosts (CLI" in text and "mixed hosts (Celery" in text
    assert "`--jobs 4` ≥ 1.3× `--jobs 1`" in text
    assert "of the capacity" in text and "parallel capacity at the runs" in text
    scale = text.split("## Scale")[1].split("## Mixed")[0]
    assert "| 20 created |" in scale and "failed" not in scale  # every generated dataset synced on every path

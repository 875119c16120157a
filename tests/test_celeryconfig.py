"""Plain `celery` commands (as a process manager might run them) share the CLI's configuration checks."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_bad_setting_stops_celery_with_the_variable_named(command: str) -> None:
    env = {**os.environ, "DATASYNC_HOST_LIMITS": "www.datadictionary.nhs.uk=0:2"}
    result = subprocess.run(
        [sys.executable, "-m", "celery", "--app", "worker.celery_app", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "datasync configuration error: DATASYNC_HOST_LIMITS" in result.stderr
    assert "Traceback" not in result.stderr

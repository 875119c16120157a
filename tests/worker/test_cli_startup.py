"""What ``datasync`` does before any command runs: ``--version``, and a start-up that stays light."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, env=env)


def test_version_prints_the_installed_package_version() -> None:
    result = run_python("-m", "worker.cli", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"datasync {version('datasync')}"


# What ``--help`` and ``--version`` must answer without: the store, HTTP, the broker and the parsers
# load in the commands that use them (issue 11: the start-up time and memory of every command).
NOT_FOR_HELP = {"celery", "kombu", "redbeat", "alembic", "sqlalchemy", "requests", "urllib3", "redis", "bs4", "lxml"}
NOT_FOR_HELP |= {"pydantic_settings"}  # the settings are a plain pydantic model over the environment
HELP_PROBE = """
import sys
sys.argv = ["datasync", "--help"]
from worker.cli import main
try:
    main()
finally:
    print(" ".join(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


def test_help_reads_the_settings_without_the_store_http_or_broker_stacks() -> None:
    result = run_python("-c", HELP_PROBE)
    assert result.returncode == 0, result.stderr
    assert "sync" in result.stdout and "status" in result.stdout
    loaded = set(result.stderr.split())
    assert not loaded & NOT_FOR_HELP


def test_help_does_not_import_celery_or_alembic() -> None:
    probe = "import sys, worker.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    result = run_python("-c", probe)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "worker" in loaded
    assert not loaded & NOT_FOR_HELP


def test_help_still_refuses_a_bad_setting_on_one_line() -> None:
    env = {**os.environ, "DATASYNC_HOST_CONCURRENCY": "0", "datasync_read_timeout": "-1"}
    result = run_python("-m", "worker.cli", "--help", env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "DATASYNC_HOST_CONCURRENCY" in result.stderr and "DATASYNC_READ_TIMEOUT" in result.stderr

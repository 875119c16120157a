"""What ``datasync`` does before any command runs: ``--version``, and a start-up that stays light."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from tests.receiver import SECRET, Receiver
from tests.upstream import Upstream


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
NOT_FOR_HELP |= {"rich"}  # Typer prints the help; the consoles (worker/console.py) are built on first print
# Runs ``datasync`` with the given arguments, then prints every module it loaded (in full, dotted) on stderr.
PROBE = """
import sys
sys.argv = ["datasync", *sys.argv[1:]]
from worker.cli import main
try:
    main()
finally:
    print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_modules(stderr: str) -> set[str]:
    """The probe's last line: what the command imported."""
    return set(stderr.splitlines()[-1].split())


def loaded_packages(stderr: str) -> set[str]:
    return {name.split(".")[0] for name in loaded_modules(stderr)}


def test_help_reads_the_settings_without_the_store_http_or_broker_stacks() -> None:
    result = run_python("-c", PROBE, "--help")
    assert result.returncode == 0, result.stderr
    assert "sync" in result.stdout and "status" in result.stdout
    assert not loaded_packages(result.stderr) & NOT_FOR_HELP


def test_help_checks_host_limits_without_the_http_stack_or_parsers() -> None:
    env = {**os.environ, "DATASYNC_HOST_LIMITS": "www.datadictionary.nhs.uk=2:1"}  # a production setting
    result = run_python("-c", PROBE, "--help", env=env)
    assert result.returncode == 0, result.stderr
    assert not loaded_packages(result.stderr) & NOT_FOR_HELP


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


# What ``sync`` must run without (issue 11: its peak memory): the broker stacks, the migration tool on a
# current store, the markup parser the NHS DD extractor replaced, the API server, rich's progress bar off a
# terminal and its emoji table (the consoles print text as given).
NOT_FOR_SYNC = {"celery", "kombu", "redbeat", "alembic", "redis", "bs4", "fastapi", "uvicorn", "pydantic_settings"}
NOT_FOR_SYNC_MODULES = {"rich.progress", "rich._emoji_codes"}
# Webhooks' health model and the states they announced load with the first webhook: none is configured here.
NOT_FOR_SYNC_MODULES |= {"worker.health", "models.monitoring"}
# A SQLite store never loads PostgreSQL's dialect (models/dialect_insert.py picks the insert per dialect).
NOT_FOR_SYNC_MODULES |= {"sqlalchemy.dialects.postgresql"}
# The source kinds the synced entries do not name (``scrapers.KINDS`` loads a kind on first use), the
# publisher's client and its record builder (its markup cleaning is bs4's), and the commands' own modules
# (status, review, discovery: discovery reads links with bs4).
NOT_FOR_SYNC_MODULES |= {f"scrapers.{kind}" for kind in ("arcgis", "csv_file", "datapress", "dizions", "fhir_valueset")}
NOT_FOR_SYNC_MODULES |= {"scrapers.iso_countries", "scrapers.static_list", "scrapers.oauth", "scrapers.local"}
NOT_FOR_SYNC_MODULES |= {"publisher.client", "publisher.publish", "publisher.record"}
NOT_FOR_SYNC_MODULES |= {"worker.status", "worker.review", "worker.discover"}


def sync_env(tmp_path: Path, upstream: Upstream) -> dict[str, str]:
    """A migrated SQLite store beside the local upstream, and no other ``DATASYNC_*`` setting."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")}
    env |= {"DATASYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "DATASYNC_URL_REWRITES": upstream.rewrites()}
    assert run_python("-m", "worker.cli", "migrate", env=env).returncode == 0
    return env


def test_sync_loads_only_what_syncing_needs(tmp_path: Path, upstream: Upstream) -> None:
    env = sync_env(tmp_path, upstream)
    result = run_python("-c", PROBE, "sync", "ethnic_category", "hospitals_england_wales", env=env)
    assert result.returncode == 0, result.stderr
    assert "created: 2" in result.stdout
    assert not loaded_packages(result.stderr) & NOT_FOR_SYNC
    assert not loaded_modules(result.stderr) & NOT_FOR_SYNC_MODULES
    assert "lxml" in loaded_packages(result.stderr)  # the probe saw the sync's own imports


def test_a_sync_with_webhooks_loads_the_health_model_and_announces(tmp_path: Path, upstream: Upstream) -> None:
    """What the sync path leaves out loads when a webhook needs it, in the sync's own thread."""
    receiver = Receiver()
    try:
        env = sync_env(tmp_path, upstream) | {"DATASYNC_WEBHOOK_URLS": receiver.url, "DATASYNC_WEBHOOK_SECRET": SECRET}
        result = run_python("-c", PROBE, "sync", "ethnic_category", env=env)
        assert result.returncode == 0, result.stderr
        assert {"worker.health", "models.monitoring"} <= loaded_modules(result.stderr)
        assert [event["type"] for event in receiver.wait_for(1)] == ["list_changed"]
    finally:
        receiver.close()

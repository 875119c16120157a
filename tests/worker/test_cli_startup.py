"""What ``datasync`` does before any command runs: ``--version``, and a start-up that stays light."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_version_prints_the_installed_package_version() -> None:
    result = run_python("-m", "worker.cli", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"datasync {version('datasync')}"


def test_help_does_not_import_celery_or_alembic() -> None:
    probe = "import sys, worker.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    result = run_python("-c", probe)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "worker" in loaded
    assert not loaded & {"celery", "kombu", "redbeat", "alembic"}

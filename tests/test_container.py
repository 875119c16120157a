"""The container files, checked without a Docker engine: what each service runs must exist."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


def datasync_commands() -> list[list[str]]:
    found = []
    for service in services().values():
        for command in (service.get("command"), (service.get("healthcheck") or {}).get("test")):
            if command and "datasync" in command:
                found.append(command[command.index("datasync") + 1 :])
    return found


def test_dependencies_name_defined_services() -> None:
    defined = set(services())
    for name, service in services().items():
        assert set(service.get("depends_on") or {}) <= defined, name


def test_worker_and_beat_have_their_own_health_checks() -> None:
    assert services()["worker"]["healthcheck"]["test"] == ["CMD", "datasync", "healthcheck", "worker"]
    assert services()["beat"]["healthcheck"]["test"] == ["CMD", "datasync", "healthcheck", "beat"]


@pytest.mark.parametrize("command", datasync_commands(), ids=" ".join)
def test_every_datasync_command_in_compose_exists(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", *command[:1], "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_image_runs_as_a_non_root_user_and_installs_from_the_lock_file() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert any("--require-hashes -r /opt/requirements.lock" in line for line in lines)
    copies = [line for line in lines if line.startswith("COPY ")]
    assert copies[0] == "COPY requirements.lock /opt/requirements.lock"  # dependencies cached before the code


@pytest.mark.parametrize("path", [".venv/bin/python", "datasync.db", ".datasync/redis/dump.rdb", ".git/HEAD"])
def test_local_state_stays_out_of_the_build_context(path: str) -> None:
    patterns = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    prefixes = [str(Path(*Path(path).parts[: n + 1])) for n in range(len(Path(path).parts))]
    assert any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes for pattern in patterns), path

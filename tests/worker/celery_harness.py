"""Real Celery processes for integration tests: workers and beats on a real Redis and store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil

from worker.settings import DEFAULT_CATALOGUE


def write_catalogue(path: Path, keys: list[str], **overrides: Any) -> Path:
    """A catalogue of some shipped entries, with fields overridden (e.g. a tiny frequency)."""
    shipped = {entry["key"]: entry for entry in tomllib.loads(DEFAULT_CATALOGUE.read_text())["datasets"]}
    blocks = []
    for key in keys:
        entry = {**shipped[key], **overrides}
        blocks.append("[[datasets]]\n" + "".join(f"{name} = {json.dumps(value)}\n" for name, value in entry.items()))
    path.write_text("\n".join(blocks))
    return path


class CeleryProcesses:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")}
        self.env.update(env)
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []
        self.log_files: list[IO[str]] = []
        self.log_paths: list[Path] = []

    def start(self, command: str, *args: str) -> subprocess.Popen:
        log = (self.log_dir / f"{command}-{len(self.processes)}.log").open("w")  # noqa: SIM115 - closed in stop()
        self.log_files.append(log)
        self.log_paths.append(Path(log.name))
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", command, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def worker(self, name: str, concurrency: int = 2) -> subprocess.Popen:
        return self.start(
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
        )

    def wait_ready(self, worker: subprocess.Popen, timeout: float = 120) -> None:
        """Until ``worker`` consumes (its log says ``ready.``): a busy machine can take many seconds to start one."""
        log = self.log_paths[self.processes.index(worker)]
        wait_until(lambda: " ready." in log.read_text(), timeout, f"{log.name} to say ready", self)

    def beat(self, index: int, *args: str) -> subprocess.Popen:
        return self.start("beat", "--loglevel=INFO", f"--pidfile={self.log_dir / f'beat{index}.pid'}", *args)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def stop(self) -> None:
        stop_process_groups(self.processes, grace_seconds=15)
        for log in self.log_files:
            log.close()

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-4000:]}" for path in sorted(self.log_dir.glob("*.log")))


def stop_process_groups(processes: list[subprocess.Popen], grace_seconds: float) -> None:
    """SIGTERM each process group (a worker and its pool), then SIGKILL whatever outlives the grace."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def pool_children(process: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(process.pid).children(recursive=True)


def wait_until(condition: Callable[[], Any], timeout: float, message: str, harness: CeleryProcesses) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}\n{harness.logs()}")

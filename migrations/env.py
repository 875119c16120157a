"""Alembic environment: migrations run from code (``datasync migrate``) or the ``alembic`` CLI.

Several processes may migrate the same store at once (``datasync run`` starting while an operator
runs ``datasync status``, or many workers on PostgreSQL), so migrations are serialised: the second
process waits, then finds the schema current and does nothing.
"""

import contextlib
import fcntl
from collections.abc import Iterator

from alembic import context
from sqlalchemy import Connection, create_engine, make_url, pool, text

from models import monitoring  # noqa: F401  (its tables belong to Base.metadata for autogenerate)
from models.schema import Base

url = context.config.get_main_option("sqlalchemy.url", "")
MIGRATION_LOCK_ID = 0x64617461  # any fixed number: "data"


@contextlib.contextmanager
def exclusive(connection: Connection) -> Iterator[None]:
    """One migrating process per store: an advisory lock on PostgreSQL, a lock file for SQLite."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        return
    database = make_url(url).database
    if connection.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run() -> None:
    sqlite = make_url(url).get_backend_name() == "sqlite"
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"timeout": 30} if sqlite else {})
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite)
        with exclusive(connection), context.begin_transaction():
            context.run_migrations()


run()

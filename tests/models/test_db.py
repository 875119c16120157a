"""Migrations: they build the models' schema, and are safe when several processes start at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from models import monitoring
from models.db import get_engine, is_current
from models.schema import Base


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("postgres_server").new_database()


def test_concurrent_migrations_all_succeed(fresh_store: str) -> None:
    script = "import sys; from models.db import migrate; migrate(sys.argv[1])"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, fresh_store], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    failures = [error for process in processes if (error := process.communicate(timeout=120)[1]) and process.returncode]
    assert failures == []
    assert is_current(fresh_store)


def test_migrations_build_exactly_the_models_schema(store_url: str) -> None:
    """A model change without its migration (or the reverse) shows up here, on both backends."""
    assert monitoring.ApiKey.__table__.metadata is Base.metadata  # its tables count, whatever ran first
    with get_engine(store_url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_head_read_from_the_version_files_is_alembics() -> None:
    """``is_current`` reads the head without Alembic; it must name the revision Alembic upgrades to."""
    from alembic.script import ScriptDirectory

    from models.db import alembic_config, head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_a_store_is_current_only_once_migrated(tmp_path: Path) -> None:
    from models.db import migrate

    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert not is_current(url)
    migrate(url)
    assert is_current(url)
    with get_engine(url).begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    assert not is_current(url)

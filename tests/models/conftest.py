"""A platform-shaped store: ``surveys_dataset`` created by the platform's own DDL, on SQLite and PostgreSQL.

On PostgreSQL the platform's tables live in their own schema, and datasync connects as a role that
may only SELECT, INSERT and UPDATE ``surveys_dataset`` there (its own tables go in ``public``): the
grant ``docs/operations.md`` asks for, so any DDL datasync tried on the platform's table would fail.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from models.db import migrate
from models.types import utcnow
from tests.upstream import Upstream
from worker.context import SyncContext
from worker.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PLATFORM_SCHEMA = "checktick"
APP_ROLE = "datasync_app"
ORGANISATION_ID, TEAM_ID = 5, 9


def platform_ddl(dialect: str) -> str:
    """The platform's DDL from the guide's references (``../shared`` in CI, beside the worktrees here)."""
    for shared in (REPO.parent / "shared", REPO.parent.parent / "shared"):
        path = shared / "reference" / "platform" / f"surveys_dataset.{dialect}.sql"
        if path.exists():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"surveys_dataset.{dialect}.sql not found under ../shared/reference/platform/")


@dataclass
class PlatformStore:
    """The platform's database: ``url`` is datasync's access, ``admin`` the platform's own."""

    url: str
    admin: Engine
    schema: str | None
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return f"{self.schema}.surveys_dataset" if self.schema else "surveys_dataset"

    def settings(self, upstream: Upstream, **changes: Any) -> Settings:
        return Settings(
            database_url=self.url,
            store_profile="checktick",
            platform_schema=self.schema,
            url_rewrites=upstream.rewrites(),
            host_rate_per_second=1000,
            host_concurrency=8,
            **changes,
        )

    def rows(self) -> dict[str, dict[str, Any]]:
        """Every row of ``surveys_dataset`` as the platform reads it (JSON decoded on SQLite)."""
        with self.admin.connect() as connection:
            found = connection.execute(text(f"SELECT * FROM {self.table} ORDER BY id")).mappings().all()
        return {row["key"]: {name: _decoded(name, value) for name, value in row.items()} for row in found}

    def execute(self, statement: str, **params: Any) -> None:
        with self.admin.begin() as connection:
            connection.execute(text(statement), params)

    def insert(self, **values: Any) -> None:
        """A row as the platform's own code writes it: every NOT NULL column given."""
        row = {**platform_row_defaults(), **values}
        for name in ("options", "tags"):
            row[name] = json.dumps(row[name])
        cast = "CAST(:{0} AS jsonb)" if self.admin.dialect.name == "postgresql" else ":{0}"
        placeholders = ", ".join(cast.format(n) if n in ("options", "tags") else f":{n}" for n in row)
        self.execute(f"INSERT INTO {self.table} ({', '.join(row)}) VALUES ({placeholders})", **row)


def _decoded(name: str, value: Any) -> Any:
    return json.loads(value) if name in ("options", "tags") and isinstance(value, str) else value


def platform_row_defaults() -> dict[str, Any]:
    """What Django fills when a field is not given (``reference/platform/README.md``)."""
    now = utcnow()
    return {
        "description": "",
        "category": "user_created",
        "source_type": "manual",
        "reference_url": "",
        "nhs_dd_page_id": "",
        "is_custom": True,
        "external_api_endpoint": "",
        "external_api_url": "",
        "sync_frequency_hours": 24,
        "is_global": False,
        "options": [],
        "format_pattern": "",
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "tags": [],
        "snomed_refset_id": "",
        "snomed_query_type": "",
        "snomed_ecl": "",
        "is_featured": False,
        "is_active": True,
    }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PlatformStore]:
    if request.param == "sqlite":
        path = tmp_path / "platform.db"
        with sqlite3.connect(path) as connection:
            connection.executescript(platform_ddl("sqlite"))
            connection.execute(
                "INSERT INTO surveys_organization (id, name) VALUES (?, 'A charity')", (ORGANISATION_ID,)
            )
            connection.execute("INSERT INTO surveys_team (id, name) VALUES (?, 'A team')", (TEAM_ID,))
        url = f"sqlite:///{path}"
        store = PlatformStore(url, create_engine(url), None)
    else:
        store = _postgres_platform(request.getfixturevalue("postgres_server").new_database())
    yield store
    store.admin.dispose()


def _postgres_platform(admin_url: str) -> PlatformStore:
    url = make_url(admin_url)
    connect = {"dbname": url.database, "host": url.query["host"], "port": url.query["port"], "user": "postgres"}
    with psycopg.connect(**connect, autocommit=True) as connection:  # type: ignore[arg-type]
        connection.execute(f"CREATE SCHEMA {PLATFORM_SCHEMA}")
        connection.execute(f"SET search_path TO {PLATFORM_SCHEMA}")
        connection.execute(platform_ddl("postgresql"))
        connection.execute(f"INSERT INTO surveys_organization (id, name) VALUES ({ORGANISATION_ID}, 'A charity')")
        connection.execute(f"INSERT INTO surveys_team (id, name) VALUES ({TEAM_ID}, 'A team')")
        connection.execute(
            f"DO $$ BEGIN CREATE ROLE {APP_ROLE} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        connection.execute(f"GRANT USAGE ON SCHEMA {PLATFORM_SCHEMA} TO {APP_ROLE}")
        connection.execute(f"GRANT SELECT, INSERT, UPDATE ON {PLATFORM_SCHEMA}.surveys_dataset TO {APP_ROLE}")
        connection.execute(f"GRANT CREATE ON SCHEMA public TO {APP_ROLE}")
    app_url = url.set(username=APP_ROLE).render_as_string(hide_password=False)
    return PlatformStore(app_url, create_engine(admin_url), PLATFORM_SCHEMA)


@pytest.fixture
def platform_ctx(platform: PlatformStore, upstream: Upstream) -> Iterator[SyncContext]:
    settings = platform.settings(upstream)
    migrate(settings.database_url, settings.dataset_table())
    context = SyncContext.from_settings(settings)
    yield context
    context.close()

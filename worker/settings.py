"""Runtime configuration, read once from the environment (prefix ``DATASYNC_``).

Every knob an operator may need lives here so that the CLI, the Celery app and the tests agree on
one source of truth; ``docs/operations.md`` explains each setting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.datasets import DatasetTable, dataset_table
from scrapers.http import UrlRewrites
from scrapers.throttle import HostLimit, HostLimits
from worker.problems import Problem, pointer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = REPO_ROOT / "catalogue.toml"
SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
SQL_NAME_OR_EMPTY = r"^([A-Za-z_][A-Za-z0-9_]{0,62})?$"
DEFAULT_USER_AGENT = "datasync/0.1 (NHS dataset sync worker; +https://www.datadictionary.nhs.uk)"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATASYNC_", extra="ignore")

    database_url: str = "sqlite:///datasync.db"
    broker_url: str | None = None
    result_backend: str | None = None
    catalogue: Path = DEFAULT_CATALOGUE
    url_rewrites: str = ""

    user_agent: str = DEFAULT_USER_AGENT
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_response_bytes: int = 5 * 1024 * 1024

    host_concurrency: int = Field(2, ge=1)
    host_rate_per_second: float = Field(2.0, gt=0)
    host_limits: str = ""

    lease_seconds: int = Field(600, ge=5)
    max_retries: int = Field(5, ge=0)
    retry_backoff_seconds: float = Field(30.0, ge=0)
    retry_backoff_max_seconds: float = Field(1800.0, ge=0)
    failure_pause_seconds: float = Field(3600.0, ge=0)

    beat_interval_seconds: float = Field(300.0, gt=0)
    due_jitter_seconds: float = Field(60.0, ge=0)
    run_retention_days: int = Field(90, ge=0)
    worker_concurrency: int = Field(2, ge=1)
    task_soft_time_limit: int = Field(240, ge=1)
    task_time_limit: int = Field(300, ge=1)
    max_tasks_per_child: int = Field(100, ge=1)
    visibility_timeout: int = Field(3600, ge=1)

    max_removed_share: float = Field(0.2, ge=0, le=1)
    max_relabelled_share: float = Field(0.5, ge=0, le=1)
    max_code_length: int = Field(64, ge=1)
    max_label_length: int = Field(1000, ge=1)

    # Publishing to the national data catalogue (publisher/, docs/publishing.md); off while no URL.
    publish_url: str | None = None
    publish_client_id: str | None = None
    publish_client_secret: SecretStr | None = None
    publish_token_url: str | None = None
    publish_dataset_api_url: str | None = None
    publish_contact_name: str = ""
    publish_contact_email: str = ""
    publish_auto: bool = False
    publish_max_attempts: int = Field(default=4, ge=1, le=10)
    publish_retry_backoff_seconds: float = Field(default=2.0, ge=0)
    publish_retry_wait_max_seconds: float = Field(default=120.0, ge=0)

    # Store profile: whose table holds the datasets (datasync's own, or the platform's surveys_dataset).
    store_profile: Literal["datasync", "checktick"] = "datasync"
    platform_table: str = Field(default="surveys_dataset", pattern=SQL_NAME)
    platform_schema: str | None = Field(default=None, pattern=SQL_NAME_OR_EMPTY)

    @model_validator(mode="after")
    def _schema_needs_postgres(self) -> Settings:
        if self.platform_schema and self.database_url.startswith("sqlite"):
            raise ValueError("DATASYNC_PLATFORM_SCHEMA: SQLite has no schemas; leave it unset for a SQLite store")
        return self

    def dataset_table(self) -> DatasetTable:
        """The table datasets are read from and written to under ``store_profile``."""
        return dataset_table(self.store_profile, self.platform_table, self.platform_schema or None)

    @field_validator("url_rewrites")
    @classmethod
    def _valid_rewrites(cls, value: str) -> str:
        UrlRewrites(value)
        return value

    @field_validator("host_limits")
    @classmethod
    def _valid_host_limits(cls, value: str) -> str:
        HostLimits(HostLimit(1, 1.0), value)
        return value

    @field_validator("publish_url", "publish_token_url", "publish_dataset_api_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value and not re.match(r"^https?://[^/\s]+\S*$", value):
            raise ValueError("must be an absolute http:// or https:// URL")
        return value or None

    @field_validator("publish_contact_email")
    @classmethod
    def _email(cls, value: str) -> str:
        if value and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", value):
            raise ValueError("must be an e-mail address")
        return value

    @model_validator(mode="after")
    def _consistent_time_limits(self) -> Settings:
        """Limits that only protect anything in the right order."""
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError(
                "DATASYNC_TASK_SOFT_TIME_LIMIT must be below DATASYNC_TASK_TIME_LIMIT, so a sync can record its end"
            )
        if self.lease_seconds <= self.task_time_limit:
            raise ValueError(
                "DATASYNC_LEASE_SECONDS must exceed DATASYNC_TASK_TIME_LIMIT, or a slow sync could lose its lease"
            )
        if self.visibility_timeout <= self.retry_backoff_max_seconds + self.task_time_limit:
            raise ValueError(
                "DATASYNC_VISIBILITY_TIMEOUT must exceed DATASYNC_RETRY_BACKOFF_MAX_SECONDS + "
                "DATASYNC_TASK_TIME_LIMIT, or Redis would deliver a waiting retry twice"
            )
        return self


class ConfigurationError(ValueError):
    """The environment holds settings datasync cannot run with; the message names each variable."""

    def __init__(self, message: str, errors: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.errors = tuple(errors)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(describe_settings_error(exc), settings_problems(exc)) from exc


def settings_problems(exc: ValidationError) -> list[Problem]:
    """The same problems located by ``/VARIABLE`` pointers, for ``--json`` output."""
    return [
        Problem(error["type"], error["msg"].removeprefix("Value error, "), pointer(_variable(error["loc"])))
        for error in exc.errors()
    ]


def _variable(loc: tuple[int | str, ...]) -> str:
    return "DATASYNC_" + "_".join(str(part) for part in loc).upper() if loc else ""


def describe_settings_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        name = "DATASYNC_" + "_".join(str(part) for part in error["loc"]).upper()
        problems.append(message if message.startswith("DATASYNC_") or not error["loc"] else f"{name}: {message}")
    return "; ".join(problems)

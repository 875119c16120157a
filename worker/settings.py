"""Runtime configuration, read once from the environment (prefix ``DATASYNC_``).

Every knob an operator may need lives here so that the CLI, the Celery app and the tests agree on
one source of truth; ``docs/operations.md`` explains each setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from worker.problems import Problem, pointer

if TYPE_CHECKING:
    from models.datasets import DatasetTable

# Every command reads the settings first, `--help` included, so they cost little: a plain pydantic
# model over the environment (pydantic-settings alone would add ~14 MB and 0.1 s to every command),
# and what checking them needs (the store's table adapter, the HTTP and throttle parsers) is imported
# inside the check that uses it, so a command that needs no store or HTTP loads neither.
ENV_PREFIX = "DATASYNC_"

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = REPO_ROOT / "catalogue.toml"
SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
SQL_NAME_OR_EMPTY = r"^([A-Za-z_][A-Za-z0-9_]{0,62})?$"
DEFAULT_USER_AGENT = "datasync/0.1 (NHS dataset sync worker; +https://www.datadictionary.nhs.uk)"


HOUR, DAY = 3600, 86400


class Settings(BaseModel):
    """Every number has a sane range (and no ``inf``/``nan``): a typo such as ``1e12`` must fail at
    start-up naming the variable, not overflow a date calculation in the middle of a beat scan.

    Each field is read from ``DATASYNC_<FIELD>`` (in any case); values passed in win over the environment.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, validate_default=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**environment(), **values})

    database_url: str = "sqlite:///datasync.db"
    broker_url: str | None = None
    result_backend: str | None = None
    catalogue: Path = DEFAULT_CATALOGUE
    url_rewrites: str = ""

    user_agent: str = DEFAULT_USER_AGENT
    connect_timeout: float = Field(default=10.0, gt=0, le=300)
    read_timeout: float = Field(default=30.0, gt=0, le=HOUR)
    max_response_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=1024**3)

    host_concurrency: int = Field(default=2, ge=1, le=100)
    host_rate_per_second: float = Field(default=2.0, gt=0, le=1000)
    host_limits: str = ""

    max_retries: int = Field(default=5, ge=0, le=100)
    retry_backoff_seconds: float = Field(default=30.0, ge=0, le=DAY)
    retry_backoff_max_seconds: float = Field(default=1800.0, ge=0, le=DAY)
    failure_pause_seconds: float = Field(default=3600.0, ge=0, le=7 * DAY)

    beat_interval_seconds: float = Field(default=30.0, gt=0, le=DAY)
    due_jitter_seconds: float = Field(default=10.0, ge=0, le=DAY)
    run_retention_days: int = Field(default=90, ge=0, le=36500)
    worker_concurrency: int = Field(default=2, ge=1, le=256)
    task_soft_time_limit: int = Field(default=240, ge=1, le=12 * HOUR)
    task_time_limit: int = Field(default=300, ge=1, le=12 * HOUR)
    max_tasks_per_child: int = Field(default=1000, ge=1, le=1_000_000)
    visibility_timeout: int = Field(default=3600, ge=1, le=7 * DAY)

    # Recovery and hung hosts (reliability-runtime): a killed worker's datasets are synced again
    # within one lease plus one beat interval; a hung request ends at its deadline; a host that keeps
    # timing out is given up for a while instead of costing a deadline per dataset; `datasync sync`
    # retries transient failures in-process, within a bound.
    lease_seconds: int = Field(default=60, ge=5, le=DAY)
    request_deadline_seconds: float = Field(default=60.0, gt=0, le=HOUR)
    host_timeout_limit: int = Field(default=3, ge=0, le=1000)
    host_unreachable_seconds: float = Field(default=120.0, ge=0, le=DAY)
    host_rate_margin: float = Field(default=0.1, ge=0, le=1)
    sync_retries: int = Field(default=2, ge=0, le=10)
    sync_retry_max_seconds: float = Field(default=30.0, ge=0, le=600)

    max_removed_share: float = Field(default=0.2, ge=0, le=1)
    max_relabelled_share: float = Field(default=0.5, ge=0, le=1)
    max_code_length: int = Field(default=64, ge=1, le=10_000)
    max_label_length: int = Field(default=1000, ge=1, le=100_000)

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
    publish_retry_backoff_seconds: float = Field(default=2.0, ge=0, le=600)
    publish_retry_wait_max_seconds: float = Field(default=120.0, ge=0, le=3600)

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
        from models.datasets import dataset_table

        return dataset_table(self.store_profile, self.platform_table, self.platform_schema or None)

    # Monitoring: health model, HTTP API, webhooks (docs/monitoring.md)
    failing_after: int = Field(3, ge=1, le=1000)
    worker_ping_timeout: float = Field(1.0, gt=0, le=30)
    api_rate_anonymous_per_minute: int = Field(60, ge=1, le=1_000_000)
    api_rate_key_per_minute: int = Field(120, ge=1, le=1_000_000)
    api_cors_origins: str = ""
    api_public_status: bool = True
    webhook_urls: str = ""
    webhook_secret: SecretStr = SecretStr("")
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_seconds: float = Field(10.0, ge=0, le=3600)
    webhook_timeout_seconds: float = Field(5.0, gt=0, le=60)

    @field_validator("url_rewrites")
    @classmethod
    def _valid_rewrites(cls, value: str) -> str:
        if value.strip():
            from scrapers.http import UrlRewrites

            UrlRewrites(value)
        return value

    @field_validator("host_limits")
    @classmethod
    def _valid_host_limits(cls, value: str) -> str:
        if value.strip():
            from scrapers.throttle import HostLimit, HostLimits

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

    @field_validator("webhook_urls")
    @classmethod
    def _http_webhooks(cls, value: str) -> str:
        for url in split_list(value):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _consistent_time_limits(self) -> Settings:
        """Limits that only protect anything in the right order."""
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError(
                "DATASYNC_TASK_SOFT_TIME_LIMIT must be below DATASYNC_TASK_TIME_LIMIT, so a sync can record its end"
            )
        if self.request_deadline_seconds >= self.task_soft_time_limit:
            raise ValueError(
                "DATASYNC_REQUEST_DEADLINE_SECONDS must be below DATASYNC_TASK_SOFT_TIME_LIMIT, so a hung request "
                "ends as a timeout before the task runs out of time"
            )
        if self.visibility_timeout <= self.retry_backoff_max_seconds + self.task_time_limit:
            raise ValueError(
                "DATASYNC_VISIBILITY_TIMEOUT must exceed DATASYNC_RETRY_BACKOFF_MAX_SECONDS + "
                "DATASYNC_TASK_TIME_LIMIT, or Redis would deliver a waiting retry twice"
            )
        if self.webhook_urls and not self.webhook_secret.get_secret_value():
            raise ValueError(
                "DATASYNC_WEBHOOK_SECRET must be set when DATASYNC_WEBHOOK_URLS is, so receivers can verify"
            )
        return self


def environment() -> dict[str, str]:
    """The ``DATASYNC_*`` variables by field name (unknown ones are ignored by the model)."""
    return {
        name[len(ENV_PREFIX) :].lower(): value
        for name, value in os.environ.items()
        if name.upper().startswith(ENV_PREFIX)
    }


def split_list(value: str) -> list[str]:
    """A comma-separated setting as its non-empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


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

"""Runtime configuration, read once from the environment (prefix ``DATASYNC_``).

Every knob an operator may need lives here so that the CLI, the Celery app and the tests agree on
one source of truth; ``docs/operations.md`` explains each setting.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scrapers.http import UrlRewrites
from scrapers.throttle import HostLimit, HostLimits

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = REPO_ROOT / "catalogue.toml"
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

    max_retries: int = Field(5, ge=0)
    retry_backoff_seconds: float = Field(30.0, ge=0)
    retry_backoff_max_seconds: float = Field(1800.0, ge=0)
    failure_pause_seconds: float = Field(3600.0, ge=0)

    beat_interval_seconds: float = Field(30.0, gt=0)
    due_jitter_seconds: float = Field(10.0, ge=0)
    run_retention_days: int = Field(90, ge=0)
    worker_concurrency: int = Field(2, ge=1)
    task_soft_time_limit: int = Field(240, ge=1)
    task_time_limit: int = Field(300, ge=1)
    max_tasks_per_child: int = Field(100, ge=1)
    visibility_timeout: int = Field(3600, ge=1)

    # Recovery and hung hosts (reliability-runtime): a killed worker's datasets are synced again
    # within one lease plus one beat interval; a hung request ends at its deadline; a host that keeps
    # timing out is given up for a while instead of costing a deadline per dataset; `datasync sync`
    # retries transient failures in-process, within a bound.
    lease_seconds: int = Field(60, ge=5)
    request_deadline_seconds: float = Field(60.0, gt=0)
    host_timeout_limit: int = Field(3, ge=0)
    host_unreachable_seconds: float = Field(120.0, ge=0)
    host_rate_margin: float = Field(0.1, ge=0, le=1)
    sync_retries: int = Field(2, ge=0, le=10)
    sync_retry_max_seconds: float = Field(30.0, ge=0, le=600)

    max_removed_share: float = Field(0.2, ge=0, le=1)
    max_relabelled_share: float = Field(0.5, ge=0, le=1)
    max_code_length: int = Field(64, ge=1)
    max_label_length: int = Field(1000, ge=1)

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
        return self


class ConfigurationError(ValueError):
    """The environment holds settings datasync cannot run with; the message names each variable."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(describe_settings_error(exc)) from exc


def describe_settings_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        name = "DATASYNC_" + "_".join(str(part) for part in error["loc"]).upper()
        problems.append(message if message.startswith("DATASYNC_") or not error["loc"] else f"{name}: {message}")
    return "; ".join(problems)

"""Runtime configuration, read once from the environment (prefix ``DATASYNC_``).

Every knob an operator may need lives here so that the CLI, the Celery app and the tests agree on
one source of truth; ``docs/operations.md`` explains each setting.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
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

    # Monitoring: health model, HTTP API, webhooks (docs/monitoring.md)
    failing_after: int = Field(3, ge=1)
    worker_ping_timeout: float = Field(1.0, gt=0, le=30)
    api_rate_anonymous_per_minute: int = Field(60, ge=1)
    api_rate_key_per_minute: int = Field(120, ge=1)
    api_cors_origins: str = ""
    api_public_status: bool = True
    webhook_urls: str = ""
    webhook_secret: SecretStr = SecretStr("")
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_seconds: float = Field(10.0, ge=0)
    webhook_timeout_seconds: float = Field(5.0, gt=0, le=60)

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
        if self.lease_seconds <= self.task_time_limit:
            raise ValueError(
                "DATASYNC_LEASE_SECONDS must exceed DATASYNC_TASK_TIME_LIMIT, or a slow sync could lose its lease"
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


def split_list(value: str) -> list[str]:
    """A comma-separated setting as its non-empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


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

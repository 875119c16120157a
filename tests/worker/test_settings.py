"""Configuration mistakes fail at start-up with the variable named, never mid-sync."""

import pytest
from pydantic import ValidationError

from worker.settings import ConfigurationError, Settings, get_settings


def test_defaults_are_consistent() -> None:
    settings = Settings()
    assert settings.request_deadline_seconds < settings.task_soft_time_limit < settings.task_time_limit
    assert settings.retry_backoff_max_seconds + settings.task_time_limit < settings.visibility_timeout


def test_shipped_timers_resync_a_killed_workers_datasets_within_two_minutes() -> None:
    """Lease (renewed while held) runs out, then the next scan abandons the run and queues it."""
    settings = Settings()
    assert settings.lease_seconds + settings.beat_interval_seconds + settings.due_jitter_seconds <= 120


@pytest.mark.parametrize(
    "values, named",
    [
        ({"task_soft_time_limit": 300, "task_time_limit": 300}, "DATASYNC_TASK_SOFT_TIME_LIMIT"),
        ({"request_deadline_seconds": 240}, "DATASYNC_REQUEST_DEADLINE_SECONDS"),
        ({"visibility_timeout": 1000}, "DATASYNC_VISIBILITY_TIMEOUT"),
        ({"url_rewrites": "https://a.example"}, "DATASYNC_URL_REWRITES"),
        ({"host_limits": "a.example=0:2"}, "DATASYNC_HOST_LIMITS"),
        ({"host_limits": "a.example=2:0"}, "DATASYNC_HOST_LIMITS"),
        ({"host_limits": "a.example=two:2"}, "DATASYNC_HOST_LIMITS"),
    ],
)
def test_inconsistent_or_malformed_settings_are_refused(values: dict, named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    assert named in str(caught.value)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATASYNC_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("DATASYNC_HOST_LIMITS", "api.rcpch.ac.uk=4:10")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.host_limits == "api.rcpch.ac.uk=4:10"


def test_get_settings_explains_a_bad_environment_by_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATASYNC_REQUEST_DEADLINE_SECONDS", "500")
    with pytest.raises(ConfigurationError, match="DATASYNC_REQUEST_DEADLINE_SECONDS must be below"):
        get_settings()


@pytest.mark.parametrize(
    "name, value",
    [
        ("DATASYNC_FAILURE_PAUSE_SECONDS", "inf"),
        ("DATASYNC_FAILURE_PAUSE_SECONDS", "1e12"),
        ("DATASYNC_BEAT_INTERVAL_SECONDS", "nan"),
        ("DATASYNC_CONNECT_TIMEOUT", "-inf"),
        ("DATASYNC_HOST_RATE_PER_SECOND", "1e9"),
        ("DATASYNC_MAX_RETRIES", "1000000"),
        ("DATASYNC_RUN_RETENTION_DAYS", "1" + "0" * 30),
    ],
)
def test_infinite_or_absurd_numbers_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=f"^{name}: "):
        get_settings()


def test_every_numeric_setting_has_an_upper_bound() -> None:
    """New settings too: a number without a ceiling is how ``1e12`` got into a date calculation."""
    for name, field in Settings.model_fields.items():
        if field.annotation in (int, float):
            assert any(hasattr(rule, "le") or hasattr(rule, "lt") for rule in field.metadata), name

"""The store-profile settings: which dataset table a process reads and writes."""

import pytest
from pydantic import ValidationError

from models.datasets import CHECKTICK_LIMITS, DATASYNC_LIMITS
from worker.settings import ConfigurationError, Settings, get_settings


def test_the_default_profile_is_datasyncs_own_table() -> None:
    table = Settings().dataset_table()
    assert (table.profile, table.display_name, table.limits) == ("datasync", "datasets", DATASYNC_LIMITS)


def test_checktick_profile_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATASYNC_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("DATASYNC_STORE_PROFILE", "checktick")
    monkeypatch.setenv("DATASYNC_PLATFORM_TABLE", "ct_dataset")
    monkeypatch.setenv("DATASYNC_PLATFORM_SCHEMA", "platform")
    table = get_settings().dataset_table()
    assert (table.profile, table.display_name, table.limits) == ("checktick", "platform.ct_dataset", CHECKTICK_LIMITS)


@pytest.mark.parametrize(
    "values, named",
    [
        ({"store_profile": "django"}, "DATASYNC_STORE_PROFILE"),
        ({"platform_table": "surveys_dataset; DROP TABLE x"}, "DATASYNC_PLATFORM_TABLE"),
        ({"platform_schema": "a.b"}, "DATASYNC_PLATFORM_SCHEMA"),
        ({"platform_schema": "platform", "database_url": "sqlite:///x.db"}, "DATASYNC_PLATFORM_SCHEMA"),
    ],
)
def test_bad_store_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], named: str
) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)  # type: ignore[arg-type]
    for name, value in values.items():
        monkeypatch.setenv(f"DATASYNC_{name.upper()}", value)
    with pytest.raises(ConfigurationError, match=named):
        get_settings()

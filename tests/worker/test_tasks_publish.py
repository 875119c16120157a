"""The optional publish beat task (DATASYNC_PUBLISH_AUTO), run eagerly against the catalogue emulator."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.catalogue_api import CatalogueApi
from tests.worker.test_tasks import worker_env  # noqa: F401 - the same worker environment
from worker import tasks
from worker.settings import get_settings


def reload_settings() -> None:
    get_settings.cache_clear()
    tasks._process.clear()


def test_the_publish_beat_task_publishes_new_versions_only_when_switched_on(
    worker_env: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tasks.sync_dataset_task.apply(kwargs={"key": "nhs_england_regions"}).get()["status"] == "created"
    with CatalogueApi() as api:
        for name, value in api.env().items():
            monkeypatch.setenv(name, value)
        reload_settings()
        assert tasks.publish_new_versions_task.apply().get() == {}
        assert api.requests() == []
        monkeypatch.setenv("DATASYNC_PUBLISH_AUTO", "true")
        reload_settings()
        assert tasks.publish_new_versions_task.apply().get() == {"nhs_england_regions": "created"}
        assert tasks.publish_new_versions_task.apply().get() == {}
    assert len(api.records) == 1


def test_beat_schedules_the_publish_task_only_when_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import celeryconfig

    assert "publish-new-versions" not in importlib.reload(celeryconfig).beat_schedule
    with monkeypatch.context() as switched_on:
        switched_on.setenv("DATASYNC_PUBLISH_URL", "https://api.example.org/v1")
        switched_on.setenv("DATASYNC_PUBLISH_AUTO", "1")
        get_settings.cache_clear()
        schedule = importlib.reload(celeryconfig).beat_schedule
    assert schedule["publish-new-versions"]["task"] == "datasync.publish_new_versions"
    get_settings.cache_clear()
    assert "publish-new-versions" not in importlib.reload(celeryconfig).beat_schedule

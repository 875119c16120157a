"""Fixtures for publishing: the catalogue emulator, a small catalogue file and a filled store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from models.db import session_factory
from models.types import utcnow
from models.upsert import Snapshot, upsert_dataset
from publisher.client import CatalogueClient
from publisher.publish import Publisher, client_config
from scrapers.normalise import content_hash
from tests.catalogue_api import CatalogueApi
from tests.worker.celery_harness import write_catalogue
from worker.catalogue import Catalogue, CatalogueEntry, load_catalogue
from worker.pipeline import dataset_spec
from worker.settings import Settings

KEYS = ["ethnic_category", "nhs_trusts", "admission_source_mental_health_provider"]
DATASET_API = "https://checktick.example.com/api/datasets/"


@pytest.fixture
def catalogue_api() -> Iterator[CatalogueApi]:
    with CatalogueApi() as api:
        yield api


@pytest.fixture
def publish_settings(store_url: str, catalogue_api: CatalogueApi, tmp_path: Path) -> Settings:
    return Settings(
        database_url=store_url,
        catalogue=write_catalogue(tmp_path / "catalogue.toml", KEYS),
        publish_url=catalogue_api.base_url,
        publish_client_id=catalogue_api.client_id,
        publish_client_secret=catalogue_api.client_secret,
        publish_retry_backoff_seconds=0.01,
        publish_dataset_api_url=DATASET_API,
        publish_contact_name="Data team",
        publish_contact_email="data@example.org",
    )


@pytest.fixture
def store(publish_settings: Settings) -> sessionmaker[Session]:
    return session_factory(publish_settings.database_url)


class Clock:
    """Sync times that move on a day per change, so ``modified`` visibly changes."""

    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0) - timedelta(days=30)

    def tick(self) -> datetime:
        self.now += timedelta(days=1)
        return self.now


@pytest.fixture
def store_list(store: sessionmaker[Session]) -> Callable[..., datetime]:
    """Write a list for an entry as a sync would, returning the time of the write."""
    clock = Clock()

    def write(entry: CatalogueEntry, options: dict[str, str] | None = None) -> datetime:
        options = options or {"A": "First", "B": "Second"}
        now = clock.tick()
        with store() as session, session.begin():
            upsert_dataset(
                session,
                dataset_spec(entry),
                Snapshot(options, content_hash(options)),
                stamp_field=entry.stamp_field,
                now=now,
                run_id=None,
            )
        return now

    return write


@pytest.fixture
def synced(publish_settings: Settings, store_list: Callable[..., datetime]) -> Catalogue:
    catalogue = load_catalogue(publish_settings.catalogue)
    for entry in catalogue.entries:
        store_list(entry)
    return catalogue


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_publisher(
    publish_settings: Settings, store: sessionmaker[Session], sleeps: list[float]
) -> Iterator[Callable[[Catalogue], Publisher]]:
    """Publishers on the test store whose clients record backoff waits instead of sleeping."""
    made: list[Publisher] = []

    def make(catalogue: Catalogue) -> Publisher:
        factory = lambda: CatalogueClient(client_config(publish_settings), sleep=sleeps.append)  # noqa: E731
        made.append(Publisher(catalogue, store, publish_settings, factory))
        return made[-1]

    yield make
    for publisher in made:
        publisher.close()

"""Publishing against the local catalogue emulator: create, no-op, minimal patches, withdraw, errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from models.schema import Publication
from publisher.publish import (
    PublishConfigError,
    Publisher,
    keys_with_new_versions,
    publish_errors,
    publish_many,
    select_keys,
)
from tests.catalogue_api import CatalogueApi, Fault
from tests.publisher.conftest import DATASET_API, KEYS
from worker.catalogue import Catalogue
from worker.settings import Settings

Make = Callable[[Catalogue], Publisher]


def publish_all(make_publisher: Make, catalogue: Catalogue, **options: Any) -> dict[str, Any]:
    publisher = make_publisher(catalogue)
    return {o.key: o for o in publish_many(publisher, select_keys(publisher, None), **options)}


def without(catalogue: Catalogue, key: str) -> Catalogue:
    return dataclasses.replace(catalogue, entries=tuple(e for e in catalogue.entries if e.key != key))


def patches(api: CatalogueApi) -> list[Any]:
    return [request.body for request in api.requests("PATCH")]


def test_publish_all_creates_one_valid_record_per_dataset(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi, store: sessionmaker[Session]
) -> None:
    outcomes = publish_all(make_publisher, synced)
    assert {key: o.status for key, o in outcomes.items()} == dict.fromkeys(KEYS, "created")
    assert len(catalogue_api.records) == 3 and catalogue_api.violations == []
    assert len(catalogue_api.requests(prefix="/ClientAuth")) == 1  # one token for the whole run
    record = catalogue_api.by_supplier_identifier("ethnic_category")
    assert record["title"] == "Ethnic Category" and record["status"] == "Published"
    assert record["keyword"] == ["demographics", "NHS"] and record["updateFrequency"] == "weekly"
    assert record["creator"] == "NHS England" and record["accessRights"] == "OPEN"
    assert record["contactPoint"] == [{"name": "Data team", "email": "data@example.org", "role": "contact"}]
    assert [(d.get("accessURL") or d.get("downloadURL"), d["mediaType"]) for d in record["distribution"]] == [
        (DATASET_API + "ethnic_category/", ["application/json"]),
        ("https://www.datadictionary.nhs.uk/data_elements/ethnic_category.html", ["text/html"]),
    ]
    with store() as session:
        stored = session.get(Publication, "ethnic_category")
        assert stored is not None and stored.catalogue_id == record["identifier"] and stored.published_version == 1


def test_a_second_run_with_nothing_changed_sends_no_request_at_all(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi
) -> None:
    publish_all(make_publisher, synced)
    catalogue_api.clear_log()
    outcomes = publish_all(make_publisher, synced)
    assert {o.status for o in outcomes.values()} == {"unchanged"}
    assert catalogue_api.requests() == []


def test_a_changed_list_sends_one_patch_with_modified_only(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi, store_list: Callable[..., datetime]
) -> None:
    publish_all(make_publisher, synced)
    catalogue_api.clear_log()
    changed_at = store_list(synced.by_key()["ethnic_category"], {"A": "First", "C": "Third"})
    outcomes = publish_all(make_publisher, synced)
    assert outcomes["ethnic_category"].status == "updated"
    assert patches(catalogue_api) == [{"modified": changed_at.strftime("%Y-%m-%dT%H:%M:%SZ")}]
    assert [r.method for r in catalogue_api.requests(prefix="/datasets")] == ["GET", "PATCH"]
    assert catalogue_api.violations == []


def test_changed_tags_go_out_as_the_whole_array(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi, store_list: Callable[..., datetime]
) -> None:
    publish_all(make_publisher, synced)
    catalogue_api.clear_log()
    entry = dataclasses.replace(synced.by_key()["nhs_trusts"], tags=("organisations", "NHS", "trusts"))
    changed_at = store_list(entry)
    publish_all(make_publisher, synced)
    assert patches(catalogue_api) == [
        {"modified": changed_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "keyword": ["organisations", "NHS", "trusts"]}
    ]
    assert catalogue_api.by_supplier_identifier("nhs_trusts")["keyword"] == ["organisations", "NHS", "trusts"]


def test_a_dataset_that_leaves_the_catalogue_is_withdrawn_once(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi
) -> None:
    publish_all(make_publisher, synced)
    catalogue_api.clear_log()
    smaller = without(synced, "nhs_trusts")
    outcomes = publish_all(make_publisher, smaller)
    assert outcomes["nhs_trusts"].status == "withdrawn"
    assert patches(catalogue_api) == [{"status": "Withdrawn"}]
    assert catalogue_api.by_supplier_identifier("nhs_trusts")["status"] == "Withdrawn"
    catalogue_api.clear_log()
    assert publish_all(make_publisher, smaller)["nhs_trusts"].status == "unchanged"
    assert catalogue_api.requests() == []


def test_an_invalid_record_is_located_stored_and_never_sent(
    synced: Catalogue,
    make_publisher: Make,
    catalogue_api: CatalogueApi,
    store_list: Callable[..., datetime],
    store: sessionmaker[Session],
) -> None:
    store_list(dataclasses.replace(synced.by_key()["ethnic_category"], name="E" * 201, tags=("x" * 76,)))
    outcomes = publish_all(make_publisher, synced)
    invalid = outcomes["ethnic_category"]
    assert invalid.status == "invalid" and invalid.error is not None
    assert "dataset 'ethnic_category'" in invalid.error["message"] and "/title" in invalid.error["message"]
    assert {(e["location"], e["type"]) for e in invalid.error["errors"]} == {
        ("/title", "max_length"),
        ("/keyword/0", "max_length"),
    }
    assert all(
        r.body.get("supplierIdentifier") != "ethnic_category" for r in catalogue_api.requests("POST", "/datasets")
    )
    with store() as session:
        assert publish_errors(session, "ethnic_category") == invalid.error
        assert publish_errors(session, "nhs_trusts") is None


def test_the_catalogues_own_validation_errors_are_stored_with_their_locations(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi, store: sessionmaker[Session]
) -> None:
    catalogue_api.known_publishers = {"nhs-england"}
    shared = dataclasses.replace(synced, publish=synced.publish.model_copy(update={"publisher": "our-trust"}))
    outcomes = publish_all(make_publisher, shared)
    assert {o.status for o in outcomes.values()} == {"rejected"}
    with store() as session:
        error = publish_errors(session, "ethnic_category")
    assert error is not None and error["code"] == "DM00012"
    assert error["errors"] == [
        {
            "type": "Fatal",
            "detail": "The publisher 'our-trust' is not a registered organisation",
            "location": "/publisher",
        }
    ]
    publisher = make_publisher(shared)
    assert keys_with_new_versions(publisher) == []  # a rejection waits for a new version
    catalogue_api.known_publishers = None
    assert {o.status for o in publish_all(make_publisher, shared).values()} == {"created"}
    with store() as session:
        assert publish_errors(session, "ethnic_category") is None


def test_an_existing_record_is_found_by_supplier_identifier_and_patched(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi
) -> None:
    key = "admission_source_mental_health_provider"  # longer than the filter's 30 characters
    publish_all(make_publisher, synced)
    remote = catalogue_api.by_supplier_identifier(key)
    with catalogue_api.lock:
        catalogue_api.records[remote["identifier"]] = {**remote, "title": "Edited by hand"}
    fresh = make_publisher(synced)
    with fresh.sessions() as session, session.begin():
        session.delete(session.get(Publication, key))  # datasync forgot the id
    catalogue_api.clear_log()
    assert publish_many(fresh, [key])[0].status == "updated"
    assert [(r.method, r.path.split("?")[0]) for r in catalogue_api.requests(prefix="/")][1:] == [
        ("POST", "/datasets"),
        ("GET", "/cataloged-resources"),
        ("GET", f"/datasets/{remote['identifier']}"),
        ("PATCH", f"/datasets/{remote['identifier']}"),
    ]
    assert patches(catalogue_api) == [{"title": synced.by_key()[key].name}]
    assert len(catalogue_api.records) == 3


def test_a_record_deleted_in_the_catalogue_is_created_again(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi, store_list: Callable[..., datetime]
) -> None:
    publish_all(make_publisher, synced)
    with catalogue_api.lock:
        catalogue_api.records.clear()
    store_list(synced.by_key()["ethnic_category"], {"Z": "Last"})
    assert publish_all(make_publisher, synced)["ethnic_category"].status == "created"


def test_5xx_and_429_are_retried_with_backoff_and_retry_after(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi, sleeps: list[float]
) -> None:
    catalogue_api.fail_next("POST", "/datasets", Fault(503), Fault(429, {"Retry-After": "7"}))
    outcomes = publish_all(make_publisher, synced)
    assert {o.status for o in outcomes.values()} == {"created"}
    assert sleeps == [0.01, 7.0]


def test_a_catalogue_that_stays_down_is_a_stored_failure_retried_next_run(
    synced: Catalogue,
    make_publisher: Make,
    catalogue_api: CatalogueApi,
    store: sessionmaker[Session],
    sleeps: list[float],
) -> None:
    catalogue_api.fail_next("POST", "/datasets", *[Fault(502)] * 4)
    outcomes = publish_all(make_publisher, synced)
    assert outcomes["ethnic_category"].status == "failed" and len(sleeps) == 3
    with store() as session:
        error = publish_errors(session, "ethnic_category")
    assert error is not None and error["code"] == "HTTP502" and "HTTP 502" in error["message"]
    assert publish_all(make_publisher, synced)["ethnic_category"].status == "created"


def test_an_expired_token_is_refreshed_once_and_never_shown(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi, store_list: Callable[..., datetime]
) -> None:
    publisher = make_publisher(synced)
    publish_many(publisher, ["ethnic_category"])
    catalogue_api.revoke_tokens()
    store_list(synced.by_key()["ethnic_category"], {"Q": "New"})
    outcomes = publish_many(publisher, KEYS)
    assert [o.status for o in outcomes] == ["updated", "created", "created"]
    assert len(catalogue_api.requests(prefix="/ClientAuth")) == 2
    with catalogue_api.lock:
        tokens = list(catalogue_api.tokens)
    shown = repr([o.to_json() for o in outcomes])
    assert catalogue_api.client_secret not in shown and not any(token in shown for token in tokens)


def test_credentials_the_catalogue_refuses_fail_every_dataset_in_one_line(
    synced: Catalogue, catalogue_api: CatalogueApi, publish_settings: Settings, store: sessionmaker[Session]
) -> None:
    wrong = publish_settings.model_copy(update={"publish_client_secret": SecretStr("not-it")})
    publisher = Publisher(synced, store, wrong)
    try:
        outcomes = publish_many(publisher, KEYS)
    finally:
        publisher.close()
    assert {o.status for o in outcomes} == {"failed"}
    message = outcomes[0].error["message"] if outcomes[0].error else ""
    assert "token endpoint" in message and "HTTP 401" in message and "not-it" not in message
    assert len(catalogue_api.requests(prefix="/ClientAuth")) == 1  # refused once: not asked again


def test_a_dry_run_sends_nothing_and_shows_the_patch(
    synced: Catalogue, make_publisher: Make, catalogue_api: CatalogueApi, store_list: Callable[..., datetime]
) -> None:
    assert {o.status for o in publish_all(make_publisher, synced, dry_run=True).values()} == {"would_create"}
    publish_all(make_publisher, synced)
    catalogue_api.clear_log()
    changed_at = store_list(synced.by_key()["ethnic_category"], {"D": "Fourth"})
    preview = publish_all(make_publisher, without(synced, "nhs_trusts"), dry_run=True)
    assert preview["ethnic_category"].patch == {"modified": changed_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert preview["nhs_trusts"].status == "would_withdraw" and preview["nhs_trusts"].patch == {"status": "Withdrawn"}
    assert catalogue_api.requests() == []


def test_new_versions_are_what_the_beat_task_publishes(
    synced: Catalogue, make_publisher: Make, store_list: Callable[..., datetime]
) -> None:
    publisher = make_publisher(synced)
    assert keys_with_new_versions(publisher) == KEYS
    publish_many(publisher, KEYS)
    assert keys_with_new_versions(publisher) == []
    store_list(synced.by_key()["nhs_trusts"], {"N": "New"})
    assert keys_with_new_versions(publisher) == ["nhs_trusts"]
    smaller = make_publisher(without(synced, "ethnic_category"))
    assert keys_with_new_versions(smaller) == ["nhs_trusts", "ethnic_category"]
    publish_many(smaller, keys_with_new_versions(smaller))
    assert keys_with_new_versions(smaller) == []


def test_publishing_is_off_without_a_url(synced: Catalogue, store: sessionmaker[Session], store_url: str) -> None:
    publisher = Publisher(synced, store, Settings(database_url=store_url))
    with pytest.raises(PublishConfigError) as caught:
        publish_many(publisher, KEYS)
    assert str(caught.value).startswith("publishing is off: set DATASYNC_PUBLISH_URL")
    assert [e["location"] for e in caught.value.document["errors"]] == [
        "/DATASYNC_PUBLISH_URL",
        "/DATASYNC_PUBLISH_CLIENT_ID",
        "/DATASYNC_PUBLISH_CLIENT_SECRET",
    ]
    assert {o.status for o in publish_many(publisher, KEYS, dry_run=True)} == {"would_create"}


def test_an_unknown_key_is_refused_before_anything_is_sent(synced: Catalogue, make_publisher: Make) -> None:
    with pytest.raises(PublishConfigError, match="no dataset with key 'nope'"):
        select_keys(make_publisher(synced), ["nope"])

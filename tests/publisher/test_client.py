"""The catalogue API client against the emulator: tokens, retries, error documents, no secrets shown."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from publisher.client import CatalogueApiError, CatalogueClient, ClientConfig
from tests.catalogue_api import CatalogueApi, Fault


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api() -> Iterator[CatalogueApi]:
    with CatalogueApi() as emulator:
        yield emulator


def config(api: CatalogueApi, **changes: object) -> ClientConfig:
    values: dict[str, object] = {
        "base_url": api.base_url,
        "token_url": api.base_url + "/ClientAuth/get-token",
        "client_id": api.client_id,
        "client_secret": api.client_secret,
        "user_agent": "datasync-test",
        "backoff_seconds": 0.5,
        **changes,
    }
    return ClientConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(api: CatalogueApi, clock: FakeClock, sleeps: list[float]) -> Iterator[CatalogueClient]:
    made = CatalogueClient(config(api), sleep=sleeps.append, clock=clock)
    yield made
    made.close()


def token_requests(api: CatalogueApi) -> int:
    return len(api.requests(prefix="/ClientAuth"))


def test_the_token_is_cached_until_shortly_before_it_expires(
    api: CatalogueApi, client: CatalogueClient, clock: FakeClock
) -> None:
    api.token_lifetime = 600
    client.get_dataset("missing")
    client.get_dataset("missing")
    assert token_requests(api) == 1
    assert api.requests(prefix="/ClientAuth")[0].body == ["discover publish"]
    clock.now += 600 - 31
    client.get_dataset("missing")
    assert token_requests(api) == 1
    clock.now += 2
    client.get_dataset("missing")
    assert token_requests(api) == 2


def test_a_401_refreshes_the_token_once_and_a_second_401_is_an_error(
    api: CatalogueApi, client: CatalogueClient
) -> None:
    client.get_dataset("missing")
    api.revoke_tokens()
    assert client.get_dataset("missing") is None
    assert token_requests(api) == 2
    api.fail_next("GET", "/datasets", Fault(401), Fault(401))
    with pytest.raises(CatalogueApiError) as caught:
        client.get_dataset("missing")
    assert caught.value.status == 401 and token_requests(api) == 3


def test_retries_stop_after_the_configured_attempts_and_wait_at_most_the_cap(
    api: CatalogueApi, clock: FakeClock, sleeps: list[float]
) -> None:
    client = CatalogueClient(config(api, max_attempts=3, wait_max_seconds=5), sleep=sleeps.append, clock=clock)
    api.fail_next("GET", "/datasets", Fault(500), Fault(429, {"Retry-After": "3600"}), Fault(504))
    with pytest.raises(CatalogueApiError) as caught:
        client.get_dataset("x")
    client.close()
    assert sleeps == [0.5, 5.0]
    assert (caught.value.status, caught.value.code) == (504, "HTTP504")


def test_an_unreachable_catalogue_is_one_line_without_a_traceback(api: CatalogueApi, sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = CatalogueClient(config(api, base_url=f"http://127.0.0.1:{port}/v1"), sleep=sleeps.append)
    with pytest.raises(CatalogueApiError) as caught:
        client.get_dataset("x")
    client.close()
    assert caught.value.code == "connection" and "could not be reached" in caught.value.message
    assert len(sleeps) == 3


def test_the_catalogues_error_document_is_kept(api: CatalogueApi, client: CatalogueClient) -> None:
    with pytest.raises(CatalogueApiError) as caught:
        client.create_dataset({"title": "x" * 201, "status": "Published", "supplierIdentifier": "k"})
    error = caught.value
    assert (error.status, error.code) == (400, "DM00012")
    assert [(p.type, p.location) for p in error.problems] == [("Fatal", "/title")]
    assert client.create_dataset({"title": "t", "status": "Published", "supplierIdentifier": "k"})
    assert client.create_dataset({"title": "t", "status": "Published", "supplierIdentifier": "k"}) is None  # 409


def test_neither_secret_nor_token_reaches_a_log_line(
    api: CatalogueApi, client: CatalogueClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.fail_next("GET", "/datasets", Fault(503))
    client.get_dataset("missing")
    with api.lock:
        tokens = list(api.tokens)
    assert tokens and caplog.records
    assert not any(secret in caplog.text for secret in [api.client_secret, *tokens])


def test_wrong_credentials_name_the_settings_to_check(api: CatalogueApi) -> None:
    client = CatalogueClient(config(api, client_secret="wrong-secret"))
    with pytest.raises(CatalogueApiError) as caught:
        client.get_dataset("x")
    client.close()
    assert "DATASYNC_PUBLISH_CLIENT_SECRET" in caught.value.message and "wrong-secret" not in caught.value.message


def test_the_emulator_catches_wasteful_patches_and_the_wrong_media_type(
    api: CatalogueApi, client: CatalogueClient
) -> None:
    """The emulator's judgement is what the publish tests rely on: it must see a bad patch."""
    catalogue_id = client.create_dataset({"title": "t", "status": "Published", "supplierIdentifier": "k"})
    assert catalogue_id is not None
    client.patch_dataset(catalogue_id, {})
    client.patch_dataset(catalogue_id, {"title": "t", "keyword": None})
    assert api.violations == [
        "an empty patch was sent",
        "/title: sent but unchanged",
        "/keyword: null for a member the record does not have",
    ]
    with pytest.raises(CatalogueApiError) as caught:
        client._send(
            "PATCH", f"/datasets/{catalogue_id}", json={"title": "u"}, content_type="application/merge-patch+json"
        )
    assert caught.value.status == 415 and api.violations[-1].startswith("PATCH sent as 'application/merge-patch+json'")
    with pytest.raises(CatalogueApiError) as caught:
        client.patch_dataset(catalogue_id, {"title": None})
    assert (caught.value.code, caught.value.problems[0].location) == ("DM00012", "/title")

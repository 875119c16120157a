"""What the HTTP client keeps between requests: the kept-alive connection after a 304, and the environment it read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import urllib3

from scrapers.http import HttpClient, NotModified, UrlRewrites
from tests.upstream import Upstream

SITE = "https://www.datadictionary.nhs.uk"
ALLOWED = frozenset({"www.datadictionary.nhs.uk"})


@pytest.fixture
def server() -> Iterator[Upstream]:
    with Upstream() as upstream:
        yield upstream


@pytest.fixture
def http(server: Upstream) -> Iterator[HttpClient]:
    http = HttpClient(user_agent="datasync-tests/1.0", rewrites=UrlRewrites(server.rewrites()))
    yield http
    http.close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every TCP connection the client opens (a kept-alive one is opened once)."""
    opened: list[object] = []
    create_connection = urllib3.util.connection.create_connection

    def counted(address: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(address)
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    return opened


def test_unchanged_answers_keep_the_connection_alive(
    server: Upstream, http: HttpClient, connects: list[object]
) -> None:
    url = f"{SITE}/t/kept_alive/page.html"
    server.set_body(url, b"<html>v1</html>")
    first = http.get(url, allowed_hosts=ALLOWED)
    for _ in range(3):
        with pytest.raises(NotModified):
            http.get(url, allowed_hosts=ALLOWED, validators=first.validators)
    assert len(server.hits(url)) == 4
    assert len(connects) == 1  # a 304 no longer closes it


def test_the_proxy_environment_is_read_once_per_host_and_still_honoured(
    server: Upstream, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    environ_proxies = requests.sessions.get_environ_proxies

    def counted(url: str, no_proxy: str | None = None) -> dict[str, str]:
        reads.append(url)
        return environ_proxies(url, no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: a request sent there fails
    url = f"{SITE}/t/environment/page.html"
    server.set_body(url, b"<html>v1</html>")
    for _ in range(3):
        assert http.get(url, allowed_hosts=ALLOWED).body == b"<html>v1</html>"  # NO_PROXY honoured
    assert len(reads) == 1

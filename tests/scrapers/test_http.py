"""The shared HTTP client against a real local upstream with scripted faults."""

from __future__ import annotations

import contextlib
import gzip
import re
import socket
import ssl
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
import trustme

from scrapers.errors import PermanentError, TransientError
from scrapers.http import (
    HttpClient,
    NotModified,
    UrlRewrites,
    Validators,
    parse_retry_after,
)
from tests.upstream import Scripted, Upstream

SITE = "https://www.datadictionary.nhs.uk"
ALLOWED = frozenset({"www.datadictionary.nhs.uk"})
USER_AGENT = "datasync-tests/1.0 (+https://example.org/datasync)"


def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- UrlRewrites ----------------------------------------------------------------------------------


def test_rewrites_apply_and_undo() -> None:
    rewrites = UrlRewrites(
        "https://www.datadictionary.nhs.uk=http://127.0.0.1:9/dd, https://api.rcpch.ac.uk=http://mirror.local/rcpch"
    )
    assert rewrites.apply(f"{SITE}/data_elements/x.html") == "http://127.0.0.1:9/dd/data_elements/x.html"
    assert rewrites.apply("https://api.rcpch.ac.uk/v1/trusts/") == "http://mirror.local/rcpch/v1/trusts/"
    assert rewrites.apply("https://other.example/x") == "https://other.example/x"
    assert rewrites.undo("http://127.0.0.1:9/dd/data_elements/x.html") == f"{SITE}/data_elements/x.html"
    assert rewrites.undo("http://mirror.local/rcpch/v1/trusts/?page=2") == "https://api.rcpch.ac.uk/v1/trusts/?page=2"
    assert rewrites.undo("http://unrelated/x") == "http://unrelated/x"


def test_rewrites_first_matching_prefix_wins() -> None:
    rewrites = UrlRewrites("https://a.example/x=http://one,https://a.example=http://two")
    assert rewrites.apply("https://a.example/x/y") == "http://one/y"
    assert rewrites.apply("https://a.example/z") == "http://two/z"


def test_empty_spec_rewrites_nothing() -> None:
    assert UrlRewrites("").apply(f"{SITE}/a") == f"{SITE}/a"
    assert UrlRewrites(" , ").pairs == []


@pytest.mark.parametrize("spec", ["no-equals-sign", "=http://to", "https://from=", "https://a=http://b,broken"])
def test_bad_rewrite_spec_is_an_error_naming_the_item(spec: str) -> None:
    with pytest.raises(ValueError, match="DATASYNC_URL_REWRITES") as caught:
        UrlRewrites(spec)
    assert "FROM=TO" in str(caught.value)


# --- HttpClient against the local upstream --------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[Upstream]:
    with Upstream() as upstream:
        yield upstream


@pytest.fixture
def site(request: pytest.FixtureRequest) -> str:
    """A URL prefix on the canonical site that no other test uses."""
    return f"{SITE}/t/{re.sub(r'[^A-Za-z0-9_]+', '_', request.node.name)}"


def client(server: Upstream, **options) -> HttpClient:
    options.setdefault("user_agent", USER_AGENT)
    return HttpClient(rewrites=UrlRewrites(server.rewrites()), **options)


@pytest.fixture
def http(server: Upstream) -> Iterator[HttpClient]:
    http = client(server)
    yield http
    http.close()


def test_200_returns_body_type_charset_and_validators(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/page.html"
    server.set_body(url, "<html>café</html>".encode())
    document = http.get(url, allowed_hosts=ALLOWED)
    assert document.body == "<html>café</html>".encode()
    assert document.url == url
    assert (document.content_type, document.charset) == ("text/html", "utf-8")
    assert document.validators.etag and document.validators.etag.startswith('"')
    assert document.validators.last_modified == formatdate(0, usegmt=True)


def test_conditional_request_with_the_etag_is_not_modified(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/page.html"
    server.set_body(url, b"<html>v1</html>")
    first = http.get(url, allowed_hosts=ALLOWED)
    with pytest.raises(NotModified):
        http.get(url, allowed_hosts=ALLOWED, validators=first.validators)
    headers = server.hits(url)[-1]
    assert headers.get("If-None-Match") == first.validators.etag
    assert headers.get("If-Modified-Since") == first.validators.last_modified


def test_a_stale_etag_gets_the_new_body(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/page.html"
    server.set_body(url, b"<html>v1</html>")
    first = http.get(url, allowed_hosts=ALLOWED)
    server.set_body(url, b"<html>v2</html>")
    second = http.get(url, allowed_hosts=ALLOWED, validators=first.validators)
    assert second.body == b"<html>v2</html>"
    assert second.validators.etag != first.validators.etag


def test_no_conditional_headers_without_validators(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/page.html"
    server.set_body(url, b"x")
    http.get(url, allowed_hosts=ALLOWED, validators=Validators())
    headers = {name.lower() for name in server.hits(url)[-1]}
    assert "if-none-match" not in headers and "if-modified-since" not in headers


def test_user_agent_and_accept_reach_the_server(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/page.html"
    server.set_body(url, b"x")
    http.get(url, allowed_hosts=ALLOWED, accept="text/html", headers={"X-Extra": "1"})
    headers = server.hits(url)[-1]
    assert headers.get("User-Agent") == USER_AGENT
    assert headers.get("Accept") == "text/html"
    assert headers.get("X-Extra") == "1"


def test_404_is_permanent(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/missing.html"
    with pytest.raises(PermanentError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert caught.value.kind == "http_404"
    assert url in str(caught.value) and "404" in str(caught.value)


@pytest.mark.parametrize("status", [503, 429])
def test_retryable_status_is_transient_with_retry_after(
    server: Upstream, http: HttpClient, site: str, status: int
) -> None:
    url = f"{site}/busy.html"
    server.script(url, Scripted(status=status, headers={"Retry-After": "7"}))
    with pytest.raises(TransientError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert caught.value.kind == f"http_{status}"
    assert caught.value.retry_after == 7.0
    assert caught.value.transient
    assert url in str(caught.value)


def test_retryable_status_without_retry_after(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/down.html"
    server.script(url, Scripted(status=500))
    with pytest.raises(TransientError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert (caught.value.kind, caught.value.retry_after) == ("http_500", None)


def test_403_explains_the_user_agent(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/blocked.html"
    server.script(url, Scripted(status=403))
    with pytest.raises(PermanentError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert caught.value.kind == "http_403"
    assert re.search(r"user[ _-]?agent", str(caught.value), re.IGNORECASE)
    assert url in str(caught.value)


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.example.com/steal",
        "http://127.0.0.1:{port}/elsewhere",
        "https://www.datadictionary.nhs.uk.evil.example/x",
    ],
    ids=["other-host", "local-port-not-rewritten", "lookalike-host"],
)
def test_redirect_to_a_host_not_allowed_is_refused(
    server: Upstream, http: HttpClient, site: str, location: str
) -> None:
    url = f"{site}/moved.html"
    server.script(url, Scripted(status=302, headers={"Location": location.format(port=free_port())}))
    with pytest.raises(PermanentError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert caught.value.kind == "redirect"
    assert "not allowed" in str(caught.value)
    assert len(server.hits(url)) == 1


def test_redirect_within_the_allowed_host_is_followed(server: Upstream, http: HttpClient, site: str) -> None:
    old, new = f"{site}/old.html", f"{site}/new.html"
    server.set_body(new, b"<html>moved here</html>")
    server.script(old, Scripted(status=301, headers={"Location": server.base_url + server.url_path(new)}))
    document = http.get(old, allowed_hosts=ALLOWED)
    assert document.body == b"<html>moved here</html>"
    assert document.url == new
    assert len(server.hits(new)) == 1


def test_relative_redirect_is_followed(server: Upstream, http: HttpClient, site: str) -> None:
    old, new = f"{site}/a/old.html", f"{site}/a/new.html"
    server.set_body(new, b"relative")
    server.script(old, Scripted(status=302, headers={"Location": "new.html"}))
    document = http.get(old, allowed_hosts=ALLOWED)
    assert (document.body, document.url) == (b"relative", new)


def test_redirect_loop_is_cut_off(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/loop.html"
    server.script(url, *[Scripted(status=302, headers={"Location": "loop.html"}) for _ in range(10)])
    with pytest.raises(PermanentError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert caught.value.kind == "redirect"
    assert "redirects" in str(caught.value)
    assert len(server.hits(url)) <= 6


@pytest.mark.parametrize(
    "url", ["ftp://www.datadictionary.nhs.uk/x.html", "file:///etc/passwd", "www.datadictionary.nhs.uk/no-scheme.html"]
)
def test_non_http_schemes_are_refused(http: HttpClient, url: str) -> None:
    with pytest.raises(PermanentError) as caught:
        http.get(url, allowed_hosts=ALLOWED | {""})
    assert caught.value.kind == "bad_url"
    assert url in str(caught.value)


def test_redirect_to_a_non_http_scheme_is_refused(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/to-file.html"
    server.script(url, Scripted(status=302, headers={"Location": "file:///etc/passwd"}))
    with pytest.raises(PermanentError) as caught:
        http.get(url, allowed_hosts=ALLOWED | {""})
    assert caught.value.kind in ("redirect", "bad_url")
    assert "file:///etc/passwd" in str(caught.value) and "http" in str(caught.value)


def test_body_over_the_declared_limit_is_too_large(server: Upstream, site: str) -> None:
    url = f"{site}/huge.html"
    server.set_body(url, b"x" * 5000)
    with contextlib.closing(client(server, max_bytes=1000)) as http, pytest.raises(PermanentError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert caught.value.kind == "too_large"
    assert "5000" in str(caught.value) and "1000" in str(caught.value)


def test_body_at_the_limit_is_fine(server: Upstream, site: str) -> None:
    url = f"{site}/exact.html"
    server.set_body(url, b"x" * 1000)
    with contextlib.closing(client(server, max_bytes=1000)) as http:
        assert len(http.get(url, allowed_hosts=ALLOWED).body) == 1000


def test_compressed_body_inflating_past_the_limit_is_too_large(server: Upstream, site: str) -> None:
    url = f"{site}/bomb.html"
    bomb = gzip.compress(b"a" * 2_000_000)
    assert len(bomb) < 10_000
    server.script(url, Scripted(body=bomb, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"}))
    with contextlib.closing(client(server, max_bytes=100_000)) as http, pytest.raises(PermanentError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert caught.value.kind == "too_large"
    assert "decompression" in str(caught.value)


def test_compressed_body_within_the_limit_is_inflated(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/small.html"
    server.script(
        url,
        Scripted(
            body=gzip.compress(b"<html>ok</html>"),
            headers={"Content-Type": "text/html; charset=ISO-8859-1", "Content-Encoding": "gzip"},
        ),
    )
    document = http.get(url, allowed_hosts=ALLOWED)
    assert document.body == b"<html>ok</html>"
    assert document.charset == "iso-8859-1"


def test_corrupt_compressed_body_is_a_clear_error(server: Upstream, http: HttpClient, site: str) -> None:
    url = f"{site}/corrupt.html"
    server.script(
        url,
        Scripted(
            body=b"\x1f\x8b\x08\x00not really gzip at all" * 10,
            headers={"Content-Type": "text/html", "Content-Encoding": "gzip"},
        ),
    )
    with pytest.raises(PermanentError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert caught.value.kind == "decode"
    assert url in str(caught.value)


def test_connection_refused_is_transient() -> None:
    port = free_port()  # bound then released: nothing listens there now
    rewrites = UrlRewrites(f"{SITE}=http://127.0.0.1:{port}")
    http = HttpClient(user_agent=USER_AGENT, rewrites=rewrites, connect_timeout=2)
    with contextlib.closing(http), pytest.raises(TransientError) as caught:
        http.get(f"{SITE}/x.html", allowed_hosts=ALLOWED)
    assert caught.value.kind == "connection"
    assert f"{SITE}/x.html" in str(caught.value)


def test_slow_upstream_times_out(server: Upstream, site: str) -> None:
    url = f"{site}/slow.html"
    server.script(url, Scripted(status=200, body=b"late", delay=1.0))
    with contextlib.closing(client(server, read_timeout=0.2)) as http, pytest.raises(TransientError) as caught:
        http.get(url, allowed_hosts=ALLOWED)
    assert caught.value.kind == "timeout"
    assert url in str(caught.value)


class RecordingThrottle:
    """Records what the client asks of its throttle: a slot per request, then the cue for its write."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        self.asked.append(f"slot {host}")
        yield

    @contextlib.contextmanager
    def sending(self, host: str) -> Iterator[None]:
        self.asked.append(f"sending {host}")
        yield

    def wait_estimate(self, host: str) -> float:
        return 0.0


def test_throttle_is_asked_for_the_canonical_host(server: Upstream, site: str) -> None:
    url = f"{site}/page.html"
    server.set_body(url, b"x")
    throttle = RecordingThrottle()
    with contextlib.closing(client(server, throttle=throttle)) as http:
        http.get(url, allowed_hosts=ALLOWED)
        http.get(url, allowed_hosts=ALLOWED)  # a kept-alive connection is paced just the same
    assert throttle.asked == ["slot www.datadictionary.nhs.uk", "sending www.datadictionary.nhs.uk"] * 2


# --- parse_retry_after ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), (" 120 ", 120.0), ("0", 0.0), (None, None), ("", None), ("soon", None), ("-5", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now=now) == pytest.approx(1_700_000_060 - now)


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now - 600, usegmt=True), now=now) == 0.0


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Upstream, Path]]:
    """An HTTPS upstream whose certificate comes from a private CA (like a corporate proxy's)."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    with Upstream(tls=context) as server:
        yield server, bundle


def test_tls_is_verified_and_an_unknown_ca_is_refused(tls_upstream: tuple[Upstream, Path]) -> None:
    server, _ = tls_upstream
    page = "https://www.datadictionary.nhs.uk/data_elements/ethnic_category.html"
    http = HttpClient(user_agent="t", rewrites=UrlRewrites(server.rewrites()))
    with pytest.raises(PermanentError) as caught:
        http.get(page, allowed_hosts=frozenset({"www.datadictionary.nhs.uk"}))
    assert caught.value.kind == "tls" and page in caught.value.message


def test_a_custom_ca_bundle_is_trusted_through_the_standard_variable(
    tls_upstream: tuple[Upstream, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, bundle = tls_upstream
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    throttle = RecordingThrottle()
    http = HttpClient(user_agent="t", rewrites=UrlRewrites(server.rewrites()), throttle=throttle)
    document = http.get(
        "https://www.datadictionary.nhs.uk/data_elements/ethnic_category.html",
        allowed_hosts=frozenset({"www.datadictionary.nhs.uk"}),
    )
    assert b"ETHNIC CATEGORY" in document.body
    assert throttle.asked[-1] == "sending www.datadictionary.nhs.uk"  # TLS requests are paced at their write too

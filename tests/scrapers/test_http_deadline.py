"""Hung hosts: a total deadline per request, timeouts named as such, and a host given up after N timeouts."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from scrapers.errors import TransientError
from scrapers.http import HostHealth, HttpClient, UrlRewrites
from tests.upstream import Upstream

SITE = "https://www.datadictionary.nhs.uk"
ALLOWED = frozenset({"www.datadictionary.nhs.uk"})


class HungServer:
    """A raw TCP server that misbehaves on purpose: drips the body, or hangs after the headers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.accepted = 0
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def rewrites(self) -> UrlRewrites:
        return UrlRewrites(f"{SITE}=http://127.0.0.1:{self.sock.getsockname()[1]}")

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            if self.mode == "silent":
                self.stop.wait(30)
                return
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n")
            while self.mode == "drip" and not self.stop.wait(0.2):
                connection.sendall(b"x")  # one byte at a time, each well inside the read timeout
            self.stop.wait(30)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def hung(request: pytest.FixtureRequest) -> Iterator[HungServer]:
    server = HungServer(request.param)
    yield server
    server.close()


def client(server: HungServer, **options: object) -> HttpClient:
    return HttpClient(user_agent="datasync-tests", rewrites=server.rewrites, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("hung", ["drip"], indirect=True)
def test_a_dripping_body_ends_at_the_total_deadline(hung: HungServer) -> None:
    http = client(hung, read_timeout=5, deadline=1.0)
    started = time.monotonic()
    with contextlib.closing(http), pytest.raises(TransientError) as caught:
        http.get(f"{SITE}/drip.html", allowed_hosts=ALLOWED)
    assert time.monotonic() - started < 3.0
    assert caught.value.kind == "timeout"
    assert "deadline" in caught.value.message and f"{SITE}/drip.html" in caught.value.message


@pytest.mark.parametrize("hung", ["silent", "headers"], indirect=True)
def test_accepted_then_hung_is_a_timeout_not_a_connection_failure(hung: HungServer) -> None:
    http = client(hung, read_timeout=0.3, deadline=10.0)
    with contextlib.closing(http), pytest.raises(TransientError) as caught:
        http.get(f"{SITE}/hung.html", allowed_hosts=ALLOWED)
    assert caught.value.kind == "timeout"
    assert "could not connect" not in caught.value.message


@pytest.mark.parametrize("hung", ["silent"], indirect=True)
def test_after_n_timeouts_the_host_fails_fast_until_its_cooldown_ends(hung: HungServer) -> None:
    http = client(hung, read_timeout=0.2, deadline=5.0, host_health=HostHealth(3, cooldown=1.0))
    with contextlib.closing(http):
        kinds = []
        for page in range(5):
            with pytest.raises(TransientError) as caught:
                http.get(f"{SITE}/page-{page}.html", allowed_hosts=ALLOWED)
            kinds.append(caught.value.kind)
        assert kinds == ["timeout"] * 3 + ["host_unreachable"] * 2
        assert hung.accepted == 3  # the last two never reached the host
        assert "timed out 3 times in a row" in caught.value.message
        time.sleep(1.1)
        with pytest.raises(TransientError) as caught:
            http.get(f"{SITE}/again.html", allowed_hosts=ALLOWED)
        assert caught.value.kind == "timeout"  # tried again after the cooldown


def test_an_answer_resets_the_count() -> None:
    health = HostHealth(2, cooldown=60)
    health.timed_out("a.example")
    health.answered("a.example")
    health.timed_out("a.example")
    health.check("a.example", "https://a.example/x")  # one timeout since the answer: not given up
    health.timed_out("a.example")
    with pytest.raises(TransientError, match="host_unreachable|timed out 2 times"):
        health.check("a.example", "https://a.example/x")


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


def test_requests_share_one_deadline_watchdog_thread(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{SITE}/t/watchdog/page.html"
    upstream.set_body(url, b"<html>v1</html>")
    test_thread, started_here = threading.current_thread(), []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        if threading.current_thread() is test_thread:  # not the upstream's handler threads
            started_here.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    http = HttpClient(user_agent="datasync-tests", rewrites=UrlRewrites(upstream.rewrites()), deadline=5.0)
    with contextlib.closing(http):
        for _ in range(30):
            assert http.get(url, allowed_hosts=ALLOWED).body == b"<html>v1</html>"
    assert started_here in ([], ["request-deadlines"])  # the process's watchdog on its first request, no more


@pytest.mark.parametrize("hung", ["drip"], indirect=True)
def test_a_short_deadline_behind_a_long_one_still_ends_on_time(hung: HungServer) -> None:
    patient = client(hung, read_timeout=5, deadline=30.0)
    quick = client(hung, read_timeout=5, deadline=1.0)

    def wait_long() -> None:
        with contextlib.closing(patient), pytest.raises(TransientError):
            patient.get(f"{SITE}/long.html", allowed_hosts=ALLOWED)

    long_one = threading.Thread(target=wait_long, daemon=True)
    long_one.start()
    started = time.monotonic()
    with contextlib.closing(quick), pytest.raises(TransientError) as caught:
        quick.get(f"{SITE}/short.html", allowed_hosts=ALLOWED)
    assert time.monotonic() - started < 3.0 and caught.value.kind == "timeout"
    hung.stop.set()  # ends the long one's drip: it fails as a broken read, not at its deadline
    long_one.join(30)
    assert not long_one.is_alive()

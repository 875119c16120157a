"""The one way datasync talks to upstreams: a shared, polite, hardened HTTP client.

Every request goes through :meth:`HttpClient.get`, which applies the URL rewrites, the per-host
throttle, timeouts, the redirect allow-list, the response-size cap and conditional headers, and
turns every failure into a :class:`~scrapers.errors.SyncError` that says what went wrong and where.
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from common.per_process import PerProcess
from scrapers.errors import PermanentError, SyncError, TransientError

if TYPE_CHECKING:
    from requests.sessions import _Settings

MAX_REDIRECTS = 5
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Validators:
    """What the upstream told us last time, for a conditional request."""

    etag: str | None = None
    last_modified: str | None = None
    token: str | None = None  # a source's own proof of "unchanged" (resource hash, expansion id), see kept_validators


@dataclass
class Document:
    url: str
    body: bytes
    content_type: str = ""
    charset: str | None = None
    validators: Validators = field(default_factory=Validators)


class NotModified(Exception):
    """The upstream answered 304 (or the source's token matched): what we have is current."""

    def __init__(self, url: str, reason: str = "upstream answered 304 Not Modified") -> None:
        super().__init__(url)
        self.url, self.reason = url, reason


class Throttle(Protocol):
    """Politeness per host (``scrapers/throttle.py``): a slot per request, and a cue for its very write."""

    def slot(self, host: str) -> contextlib.AbstractContextManager[None]: ...

    def sending(self, host: str) -> contextlib.AbstractContextManager[None]: ...

    def wait_estimate(self, host: str) -> float: ...


class NoThrottle:
    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def sending(self, host: str) -> Iterator[None]:
        yield

    def wait_estimate(self, host: str) -> float:
        return 0.0


class _Deadline:
    """The total time one request may take; at expiry the process's watchdog shuts its socket down.

    Connect and read timeouts bound each wait for bytes, not their sum: a server dripping one
    byte every few seconds would otherwise hold a sync for ever.
    """

    current = threading.local()

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds
        self.expired = False
        self.finished = False  # set (under the watchdog's lock) when the request is over: no cut-off after it
        self.connection: Any = None

    def remaining(self) -> float:
        return max(0.001, self.ends - time.monotonic())

    @contextlib.contextmanager
    def running(self) -> Iterator[_Deadline]:
        _Deadline.current.value = self
        watchdog = _watchdog()
        watchdog.watch(self)
        try:
            yield self
        finally:
            watchdog.finish(self)
            _Deadline.current.value = None

    def expire(self) -> None:
        """Cut the request off (the watchdog thread, under its lock, so never after ``finish``)."""
        self.expired = True
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread per process that cuts off every request still running at its deadline.

    A timer thread per request cost a thread start per request, more under the GIL with several
    jobs. Deadlines wait in a heap by expiry; a finished request's entry stays until it comes up
    (or until finished ones are the bulk of the heap, which is then rebuilt without them).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._finished_in_heap = 0
        self._changed = threading.Condition()
        threading.Thread(target=self._run, name="request-deadlines", daemon=True).start()

    def watch(self, deadline: _Deadline) -> None:
        with self._changed:
            heapq.heappush(self._heap, (deadline.ends, id(deadline), deadline))
            if self._heap[0][2] is deadline:  # the soonest now: the thread's wait must be shortened
                self._changed.notify()

    def finish(self, deadline: _Deadline) -> None:
        with self._changed:
            deadline.finished, deadline.connection = True, None
            if not deadline.expired:  # an expired one has left the heap already
                self._finished_in_heap += 1
            if self._finished_in_heap > 64 and self._finished_in_heap * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
                self._finished_in_heap = 0

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    deadline = heapq.heappop(self._heap)[2]
                    if deadline.finished:
                        self._finished_in_heap -= 1
                    else:
                        deadline.expire()
                self._changed.wait(self._heap[0][0] - now if self._heap else None)


_watchdog = PerProcess(_Watchdog)  # this process's watchdog, started by its first request


class _Pacing:
    """The throttle cue for the request this thread is about to write; read by the connection itself."""

    current = threading.local()

    def __init__(self, throttle: Throttle, host: str) -> None:
        self.throttle, self.host = throttle, host

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        _Pacing.current.value = self
        try:
            yield
        finally:
            _Pacing.current.value = None

    @staticmethod
    def of_this_thread() -> contextlib.AbstractContextManager[None]:
        pacing: _Pacing | None = getattr(_Pacing.current, "value", None)
        return pacing.throttle.sending(pacing.host) if pacing else contextlib.nullcontext()


class _PacedConnection(HTTPConnection):
    """Writes a request's headers inside the throttle's ``sending`` cue, after the connection is set up.

    That write is when the upstream sees the request start, so the spacing is kept there and not
    only at the grant: a thread run late after its grant cannot end up right behind the next one.
    """

    def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        if self.sock is None:
            self.connect()  # a new connection's set-up is not part of the request's start
        with _Pacing.of_this_thread():
            super().endheaders(message_body, encode_chunked=encode_chunked)


class _PacedHttpsConnection(_PacedConnection, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    """Tells the running request's deadline which connection it uses, so it can cut it off."""

    ConnectionCls = _PacedConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)
        deadline = getattr(_Deadline.current, "value", None)
        if deadline is not None:
            deadline.connection = connection
        return connection


class _WatchedHttpsPool(_WatchedPool, HTTPSConnectionPool):
    ConnectionCls = _PacedHttpsConnection


class HostHealth:
    """Consecutive timeouts per host; after ``limit`` of them the host is given up for a while.

    One host that accepts connections and never answers would otherwise cost a full deadline for
    every remaining dataset on it. Any answer from the host resets its count.
    """

    def __init__(self, limit: int, cooldown: float) -> None:
        self.limit, self.cooldown = limit, cooldown
        self._lock = threading.Lock()
        self._timeouts: dict[str, int] = {}
        self._given_up_until: dict[str, float] = {}

    def check(self, host: str, url: str) -> None:
        with self._lock:
            until = self._given_up_until.get(host, 0.0)
            count = self._timeouts.get(host, 0)
        if time.monotonic() < until:
            raise TransientError(
                "host_unreachable",
                f"{url}: not requested, {host} timed out {count} times in a row "
                f"(tried again after {self.cooldown:g} s)",
            )

    def answered(self, host: str) -> None:
        with self._lock:
            self._timeouts.pop(host, None)
            self._given_up_until.pop(host, None)

    def timed_out(self, host: str) -> None:
        with self._lock:
            count = self._timeouts[host] = self._timeouts.get(host, 0) + 1
            if self.limit and count >= self.limit:
                self._given_up_until[host] = time.monotonic() + self.cooldown


class UrlRewrites:
    """``FROM=TO`` URL-prefix rewrites (mirrors, proxies, air-gapped networks), fetch side only."""

    def __init__(self, spec: str = "") -> None:
        self.pairs: list[tuple[str, str]] = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            source, sep, target = item.partition("=")
            if not sep or not source.strip() or not target.strip():
                raise ValueError(f"DATASYNC_URL_REWRITES: {item!r} is not of the form FROM=TO")
            self.pairs.append((source.strip(), target.strip()))

    def apply(self, url: str) -> str:
        for source, target in self.pairs:
            if url.startswith(source):
                return target + url[len(source) :]
        return url

    def undo(self, url: str) -> str:
        """Map a fetched URL back to the canonical one (to judge redirects by the real host)."""
        for source, target in self.pairs:
            if url.startswith(target):
                return source + url[len(target) :]
        return url


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


class _Session(requests.Session):
    """A requests session that reads the proxy and CA-bundle environment once per scheme and host.

    requests scans every environment variable for proxies on each request, which cost an unchanged
    (304) sync about as much as its SQL; the environment of a running process does not change.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str, Any, Any, Any], _Settings] = {}

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> _Settings:
        if proxies:  # explicit proxies merge with the environment's as requests does
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url.decode() if isinstance(url, bytes) else url or "")
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        if key not in self._environment:
            self._environment[key] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings = self._environment[key].copy()
        settings["proxies"] = dict(settings["proxies"])  # requests may add to it: the cached one stays as read
        return settings


class HttpClient:
    def __init__(
        self,
        *,
        user_agent: str,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        max_bytes: int = 5 * 1024 * 1024,
        rewrites: UrlRewrites | None = None,
        throttle: Throttle | None = None,
        deadline: float = 60.0,
        host_health: HostHealth | None = None,
    ) -> None:
        self.session = _Session()
        self.session.headers["User-Agent"] = user_agent
        for adapter in self.session.adapters.values():
            if isinstance(adapter, requests.adapters.HTTPAdapter):
                adapter.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedHttpsPool}
        self.timeout = (connect_timeout, read_timeout)
        self.deadline = deadline
        self.host_health = host_health or HostHealth(0, 0.0)
        self.max_bytes = max_bytes
        self.rewrites = rewrites or UrlRewrites()
        self.throttle = throttle or NoThrottle()

    def close(self) -> None:
        self.session.close()

    def with_politeness(self, throttle: Throttle, host_health: HostHealth) -> HttpClient:
        """This client's settings on a fresh session, with another throttle and host health (a worker
        process's stand-ins for its parent's, ``worker.fetchers``)."""
        connect, read = self.timeout
        return HttpClient(
            user_agent=str(self.session.headers["User-Agent"]),
            connect_timeout=connect,
            read_timeout=read,
            max_bytes=self.max_bytes,
            rewrites=self.rewrites,
            throttle=throttle,
            deadline=self.deadline,
            host_health=host_health,
        )

    def get(
        self,
        url: str,
        *,
        allowed_hosts: frozenset[str],
        headers: dict[str, str] | None = None,
        validators: Validators | None = None,
        accept: str = "*/*",
    ) -> Document:
        """GET ``url`` (canonical form); raises ``NotModified`` on 304."""
        request_headers = {"Accept": accept, **(headers or {})}
        if validators and validators.etag:
            request_headers["If-None-Match"] = validators.etag
        if validators and validators.last_modified:
            request_headers["If-Modified-Since"] = validators.last_modified
        canonical = url
        for hop in range(MAX_REDIRECTS + 1):
            _check_url(canonical, allowed_hosts, redirected_from=url if hop else None)
            host = host_of(canonical)
            if host != host_of(url):  # credentials never follow a redirect to another host
                request_headers = {"Accept": accept}
            self.host_health.check(host, canonical)
            with self.throttle.slot(host):  # held until the body is read, not just the headers
                document = self._exchange(canonical, request_headers)
            if isinstance(document, Document):
                return document
            canonical = self.rewrites.undo(urljoin(self.rewrites.apply(canonical), document))
        raise PermanentError("redirect", f"{url}: more than {MAX_REDIRECTS} redirects")

    def post_form(
        self, url: str, form: dict[str, str], *, allowed_hosts: frozenset[str], accept: str = "application/json"
    ) -> Document:
        """POST a form (an OAuth2 token request): same rewrites, throttle, deadline and checks, no redirects."""
        _check_url(url, allowed_hosts)
        self.host_health.check(host_of(url), url)
        with self.throttle.slot(host_of(url)):
            document = self._exchange(url, {"Accept": accept}, form)
        if not isinstance(document, Document):
            raise PermanentError("redirect", f"{url}: a POST is never redirected")
        return document

    def _exchange(self, canonical: str, headers: dict[str, str], form: dict[str, str] | None = None) -> Document | str:
        """One request within the total deadline: the document, or a redirect's Location."""
        host = host_of(canonical)
        with _Deadline(self.deadline).running() as deadline, _Pacing(self.throttle, host).running():
            try:
                response = self._request(canonical, headers, deadline, form)
                self.host_health.answered(host)
                if response.is_redirect:
                    response.close()
                    return response.headers.get("Location", "")
                document = self._read(canonical, response)
            except SyncError as error:
                raise self._judge(canonical, error, deadline) from error
            if deadline.expired:  # cut off at the deadline: what was read may be only a part
                raise self._judge(canonical, TransientError("timeout", ""), deadline)
            return document

    def _judge(self, canonical: str, error: SyncError, deadline: _Deadline) -> SyncError:
        """The error to report: a cut-off at the deadline is a timeout, whatever broke first."""
        if deadline.expired:
            message = f"{canonical}: no complete answer within the {self.deadline:g} s deadline"
            error = TransientError("timeout", message)
        if error.kind == "timeout":
            self.host_health.timed_out(host_of(canonical))
        return error

    def _request(
        self, canonical: str, headers: dict[str, str], deadline: _Deadline, form: dict[str, str] | None = None
    ) -> requests.Response:
        target = self.rewrites.apply(canonical)
        connect, read = self.timeout
        timeout = (min(connect, deadline.remaining()), min(read, deadline.remaining()))
        try:
            if form is not None:
                return self.session.post(
                    target, data=form, headers=headers, timeout=timeout, stream=True, allow_redirects=False
                )
            return self.session.get(target, headers=headers, timeout=timeout, stream=True, allow_redirects=False)
        except requests.Timeout as exc:
            raise TransientError("timeout", f"{canonical}: timed out ({exc.__class__.__name__})") from exc
        except requests.exceptions.SSLError as exc:
            raise PermanentError("tls", f"{canonical}: TLS verification failed: {exc}") from exc
        except requests.ConnectionError as exc:
            raise TransientError("connection", f"{canonical}: could not connect ({_short(exc)})") from exc
        except requests.RequestException as exc:
            raise PermanentError("request", f"{canonical}: request failed: {_short(exc)}") from exc

    def _read(self, canonical: str, response: requests.Response) -> Document:
        with response:
            if response.status_code == 304:
                _ = response.content  # its empty body read, closing keeps the connection alive for the next request
                raise NotModified(canonical)
            _raise_for_status(canonical, response)
            body = self._read_capped(canonical, response)
            content_type = response.headers.get("Content-Type", "")
            return Document(
                url=canonical,
                body=body,
                content_type=content_type.split(";")[0].strip().lower(),
                charset=_charset(content_type),
                validators=Validators(response.headers.get("ETag"), response.headers.get("Last-Modified")),
            )

    def _read_capped(self, canonical: str, response: requests.Response) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise PermanentError("too_large", f"{canonical}: {declared} bytes declared, limit {self.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        for chunk in _stream(canonical, response):
            size += len(chunk)
            if size > self.max_bytes:
                raise PermanentError(
                    "too_large", f"{canonical}: body exceeds {self.max_bytes} bytes (after decompression)"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _stream(url: str, response: requests.Response) -> Iterator[bytes]:
    try:
        yield from response.raw.stream(64 * 1024, decode_content=True)
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        raise TransientError("timeout", f"{url}: the upstream stopped sending the body (timed out)") from exc
    except urllib3.exceptions.DecodeError as exc:
        raise PermanentError("decode", f"{url}: compressed body is corrupt: {_short(exc)}") from exc
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        raise TransientError("connection", f"{url}: body could not be read: {_short(exc)}") from exc


def _check_url(url: str, allowed_hosts: frozenset[str], redirected_from: str | None = None) -> None:
    where = f"{redirected_from}: redirected to {url}" if redirected_from else url
    if urlsplit(url).scheme not in ("http", "https"):
        raise PermanentError(
            "redirect" if redirected_from else "bad_url", f"{where}: only http and https URLs are fetched"
        )
    if host_of(url) not in allowed_hosts:
        allowed = ", ".join(sorted(allowed_hosts))
        raise PermanentError("redirect", f"{where}: host {host_of(url)!r} is not allowed for this source ({allowed})")


def _raise_for_status(url: str, response: requests.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    reason = f"{url}: HTTP {status} {response.reason or ''}".strip()
    body = _error_body(response)
    if status in RETRYABLE_STATUSES:
        raise TransientError(
            f"http_{status}", reason, retry_after=parse_retry_after(response.headers.get("Retry-After")), body=body
        )
    if status == 403:
        raise PermanentError(
            "http_403",
            f"{reason}: the upstream refused us (it may block non-browser clients; "
            "check DATASYNC_USER_AGENT and any API key)",
            body=body,
        )
    raise PermanentError(f"http_{status}", reason, body=body)


def _error_body(response: requests.Response, limit: int = 64 * 1024) -> bytes:
    """The start of an error response (FHIR explains errors in an OperationOutcome); never fails."""
    try:
        return response.raw.read(limit, decode_content=True) or b""
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError):
        return b""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait, from either form of Retry-After (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def _charset(content_type: str) -> str | None:
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.IGNORECASE)
    return match.group(1).lower() if match else None


def _short(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text if len(text) <= 300 else text[:297] + "..."

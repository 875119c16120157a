"""A real local HTTP upstream for tests and demos: serves the fixture tree, with scripted faults.

Paths mirror the real hosts (``/www.datadictionary.nhs.uk/data_elements/x.html``), so
``DATASYNC_URL_REWRITES`` maps production URLs onto it. Files are served with ETag and
Last-Modified and honour conditional requests. Tests can replace a file's body, or queue scripted
responses (status codes, redirects, slow or huge bodies) for a path.

Run it by hand for a demo: ``python -m tests.upstream --port 8765`` prints the rewrite to use;
SIGINT or SIGTERM (Ctrl-C, ``kill %1``, ``kill $(cat FILE)`` with ``--pid-file FILE``) stops it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.local_server import LocalServer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
HOSTS = ("www.datadictionary.nhs.uk", "api.rcpch.ac.uk")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}


@dataclass
class Scripted:
    """One canned response; ``body`` None means 'serve the file as usual'."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Upstream(LocalServer):
    hosts = HOSTS

    def __init__(self, root: Path = FIXTURES, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.root = root
        self.bodies: dict[str, bytes] = {}
        self.scripts: dict[str, list[Scripted]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic() on arrival, path): the server's own log
        self.latency = 0.0  # seconds added before every answer: a distant host
        self.fault: Callable[[str], Scripted | None] | None = None  # consulted when no response is queued
        self.lock = threading.Lock()
        self.listen(_handler_for(self), port, tls)
        self.server.handle_error = lambda request, address: None  # clients hanging up early is a test scenario

    @property
    def base_url(self) -> str:
        return self.origin

    def url_path(self, url: str) -> str:
        """The local path serving a production URL."""
        parts = urlsplit(url)
        return f"/{parts.hostname}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def set_body(self, url: str, body: bytes) -> None:
        with self.lock:
            self.bodies[self.url_path(url)] = body

    def serve_pages(self, url: str, pages: list[dict[str, Any]]) -> None:
        """Serve DRF pages (from :func:`drf_pages`, faults applied or not) at ``url`` and ``url?page=N``."""
        for number, payload in enumerate(pages, start=1):
            self.set_body(page_url(url, number), json.dumps(payload).encode("utf-8"))

    def script(self, url: str, *responses: Scripted) -> None:
        with self.lock:
            self.scripts.setdefault(self.url_path(url), []).extend(responses)

    def hits(self, url: str) -> list[dict[str, str]]:
        path = self.url_path(url)
        with self.lock:
            return [headers for requested, headers in self.requests if requested == path]

    def peak_per_second(self, host: str) -> int:
        """Most requests for ``host`` the server saw within any one-second window."""
        with self.lock:
            times = sorted(when for when, path in self.arrivals if path.startswith(f"/{host}/"))
        peak, first = 0, 0
        for last, when in enumerate(times):
            while when - times[first] >= 1.0:
                first += 1
            peak = max(peak, last - first + 1)
        return peak

    def body_for(self, path: str) -> bytes | None:
        if path in self.bodies:
            return self.bodies[path]
        file = self._file_for(path)
        return file.read_bytes() if file and file.is_file() else None

    def _file_for(self, path: str) -> Path | None:
        parts = urlsplit(path)
        relative = parts.path.lstrip("/")
        if relative.endswith("/") or not relative:
            page = parse_qs(parts.query).get("page", ["1"])[0]
            name = "index.json" if page == "1" else f"index.page-{page}.json"
            relative += name
        file = (self.root / relative).resolve()
        return file if file.is_relative_to(self.root.resolve()) else None


def page_url(url: str, number: int) -> str:
    """DRF's link to page ``number``: the bare route for page 1, ``?page=N`` after it."""
    return url if number == 1 else f"{url}?page={number}"


def drf_pages(url: str, items: list[Any], page_size: int) -> list[dict[str, Any]]:
    """Django REST Framework pages of ``items``, linked by absolute ``next``/``previous`` URLs."""
    chunks = [items[start : start + page_size] for start in range(0, len(items), page_size)] or [[]]
    return [
        {
            "count": len(items),
            "next": page_url(url, number + 1) if number < len(chunks) else None,
            "previous": page_url(url, number - 1) if number > 1 else None,
            "results": chunk,
        }
        for number, chunk in enumerate(chunks, start=1)
    ]


def ended_early(pages: list[dict[str, Any]], after: int) -> list[dict[str, Any]]:
    """The pages as an API that stops after page ``after`` serves them: the next page is empty, count 0."""
    empty = {"count": 0, "next": None, "previous": pages[after - 1]["next"], "results": []}
    return [*pages[:after], empty]


def looping(pages: list[dict[str, Any]], at: int, url: str) -> list[dict[str, Any]]:
    """The pages with page ``at``'s ``next`` pointing back at itself (a self-loop)."""
    looped = [dict(page) for page in pages[:at]]
    looped[at - 1]["next"] = page_url(url, at)
    return looped


def _handler_for(upstream: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with upstream.lock:
                upstream.arrivals.append((time.monotonic(), self.path))
                upstream.requests.append((self.path, dict(self.headers)))
                queue = upstream.scripts.get(self.path)
                scripted = queue.pop(0) if queue else None
            if scripted is None and upstream.fault is not None:
                scripted = upstream.fault(self.path)
            delay = upstream.latency + (scripted.delay if scripted else 0.0)
            if delay:
                threading.Event().wait(delay)
            if scripted and scripted.body is not None or scripted and scripted.status != 200:
                self._send(scripted.status, scripted.body or b"", scripted.headers)
                return
            body = upstream.body_for(self.path)
            if body is None:
                self._send(404, b'{"detail": "Not found."}', {"Content-Type": "application/json"})
                return
            self._send_file(body, scripted.headers if scripted else {})

        def _send_file(self, body: bytes, extra: dict[str, str]) -> None:
            etag = extra.get("ETag") or '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            headers = {
                "Content-Type": CONTENT_TYPES.get(
                    Path(urlsplit(self.path).path).suffix or ".json", "application/octet-stream"
                ),
                "ETag": etag,
                "Last-Modified": formatdate(0, usegmt=True),
                **extra,
            }
            if self.headers.get("If-None-Match") == etag:
                self._send(304, b"", {"ETag": etag})
                return
            self._send(200, body, headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 304:
                self.wfile.write(body)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--root", type=Path, default=FIXTURES)
    parser.add_argument("--pid-file", type=Path, help="write this process's id here (removed on exit)")
    args = parser.parse_args()
    stop = threading.Event()
    # Explicit handlers: a shell starts background jobs with SIGINT ignored, so without them
    # `kill -INT` (and Ctrl-C after `fg`) would do nothing.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with Upstream(args.root, args.port) as upstream:
        if args.pid_file:
            args.pid_file.write_text(f"{os.getpid()}\n")
        print(f"serving {args.root} at {upstream.base_url}")
        print(f"export DATASYNC_URL_REWRITES='{upstream.rewrites()}'", flush=True)
        try:
            stop.wait()
        finally:
            if args.pid_file:
                args.pid_file.unlink(missing_ok=True)
    print("fixture upstream stopped", flush=True)


if __name__ == "__main__":
    main()

"""The one way the test servers (file upstream, API upstream, catalogue API) listen on localhost."""

from __future__ import annotations

import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class _NoDelayServer(ThreadingHTTPServer):
    """Replies leave at once: without TCP_NODELAY, Nagle plus the client's delayed ACK hold each
    response on a kept-alive connection ~40 ms, which would inflate every localhost timing."""

    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


class LocalServer:
    """A threaded HTTP server on 127.0.0.1, serving while its ``with`` block runs.

    Subclasses call ``listen`` from ``__init__``; ``hosts`` are the production hosts it stands in for.
    """

    hosts: tuple[str, ...] = ()

    def listen(self, handler: type[BaseHTTPRequestHandler], port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.server = _NoDelayServer(("127.0.0.1", port), handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, name=type(self).__name__, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def rewrites(self) -> str:
        """The ``DATASYNC_URL_REWRITES`` value that sends every production host here."""
        return ",".join(f"https://{host}={self.origin}/{host}" for host in self.hosts)

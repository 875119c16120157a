"""A real local webhook receiver for tests: records every delivery attempt, can fail the first ones."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET = "s3cret-for-tests"


class Receiver:
    """Answers ``fail_first`` requests with 500, then 200; records every delivery attempt."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.attempts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = 500 if len(receiver.attempts) < receiver.fail_first else 200
                    receiver.attempts.append({"headers": dict(self.headers), "body": body, "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(a["body"]) for a in self.attempts if a["status"] == 200]

    def wait_for(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.delivered()) < count:
            assert time.monotonic() < deadline, f"only {self.delivered()} delivered"
            time.sleep(0.02)
        return self.delivered()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(attempt: dict[str, Any]) -> bool:
    headers, body = attempt["headers"], attempt["body"]
    expected = hmac.new(SECRET.encode(), headers["X-Datasync-Timestamp"].encode() + b"." + body, hashlib.sha256)
    fresh = abs(time.time() - int(headers["X-Datasync-Timestamp"])) < 300
    return fresh and hmac.compare_digest(headers["X-Datasync-Signature"], f"sha256={expected.hexdigest()}")

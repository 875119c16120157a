"""A local emulator of the national data catalogue's API (seed 004), on a real HTTP server.

It issues OAuth2 client-credentials tokens, serves ``GET``/``POST /datasets``, ``GET``/``PATCH
/datasets/{id}`` and ``GET /cataloged-resources?filter=``, applies JSON Merge Patch (RFC 7396)
itself, and answers validation failures, 404, 409, 5xx and 429 in the seed's error shape. Its field
rules are written from the seed independently of ``publisher.record``, so the two check each other.

Beyond answering, it judges its client: every request is logged, and ``violations`` lists what a
correct publisher never does (an empty or non-minimal patch, ``null`` for a member that is not
there, a wrong media type), so tests can assert the list stays empty.

Run it by hand for a demo: ``python -m tests.catalogue_api --port 8766``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.local_server import LocalServer

LIMITS = {"title": 200, "creator": 75, "description": 4096, "identifier": 50, "publisher": 75, "supplierIdentifier": 50}
CHOICES = {
    "type": {"Data Set", "Data Service", "Data Group", "Data Share"},
    "accessRights": {"RESTRICTED", "OPEN", "COMMERCIAL", "INTERNAL"},
    "securityClassification": {"OFFICIAL", "SECRET", "TOP_SECRET", "NOT_APPLICABLE"},
    "status": {"Draft", "Published", "Withdrawn", "Deleted"},
}
DATES = {"created", "issued", "modified"}
TEXTS = {"updateFrequency"}
STRING_LISTS = {"keyword": 75, "theme": None}
CONTACT_MEMBERS = {"name", "email", "role"}
DISTRIBUTION_MEMBERS = {"accessService", "accessURL", "description", "downloadURL", "format", "mediaType", "title"}
MEMBERS = set(LIMITS) | set(CHOICES) | DATES | TEXTS | set(STRING_LISTS) | {"contactPoint", "license", "distribution"}
REQUIRED = {"title", "status", "supplierIdentifier"}
PATCH_MEDIA_TYPE = "application/json"  # what the API's description declares for PATCH


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclass
class Logged:
    method: str
    path: str
    content_type: str | None
    body: Any


class CatalogueApi(LocalServer):
    def __init__(self, client_id: str = "datasync-test", client_secret: str = "s3cret-value", port: int = 0) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.token_lifetime = 3600
        self.tokens: dict[str, float] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.log: list[Logged] = []
        self.violations: list[str] = []
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        self.known_publishers: set[str] | None = None
        self.lock = threading.Lock()
        self.listen(_handler_for(self), port)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def env(self) -> dict[str, str]:
        """The settings that point datasync at this emulator."""
        return {
            "DATASYNC_PUBLISH_URL": self.base_url,
            "DATASYNC_PUBLISH_CLIENT_ID": self.client_id,
            "DATASYNC_PUBLISH_CLIENT_SECRET": self.client_secret,
            "DATASYNC_PUBLISH_RETRY_BACKOFF_SECONDS": "0.01",
        }

    def fail_next(self, method: str, path: str, *faults: Fault) -> None:
        """Answer the next requests to ``method path`` (path after ``/v1``, prefix match) with ``faults``."""
        with self.lock:
            self.faults.setdefault((method, path), []).extend(faults)

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def requests(self, method: str | None = None, prefix: str = "") -> list[Logged]:
        with self.lock:
            return [r for r in self.log if (method is None or r.method == method) and r.path.startswith(prefix)]

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    def by_supplier_identifier(self, supplier_identifier: str) -> dict[str, Any]:
        with self.lock:
            return next(r for r in self.records.values() if r.get("supplierIdentifier") == supplier_identifier)

    # --- request handling (under the lock) ----------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], Any]:
        if path == "/v1/ClientAuth/get-token":
            return self._token(method, headers, raw)
        route = path.removeprefix("/v1")
        body = _json_or_none(raw)
        self.log.append(Logged(method, route, headers.get("content-type"), body))
        if not self._authorised(headers):
            return 401, {"WWW-Authenticate": "Bearer"}, _error("Unauthorised", "DM00001")
        for (fault_method, prefix), queue in self.faults.items():
            if fault_method == method and route.startswith(prefix) and queue:
                fault = queue.pop(0)
                return fault.status, fault.headers, fault.body or _error(f"HTTP {fault.status}", f"HTTP{fault.status}")
        parts = urlsplit(route)
        if method == "GET" and parts.path == "/cataloged-resources":
            return self._filter(parse_qs(parts.query).get("filter", [""])[0])
        if method == "POST" and parts.path == "/datasets":
            return self._create(body)
        match = re.fullmatch(r"/datasets/([\w-]+)", parts.path)
        if match and match.group(1) not in self.records:
            return 404, {}, _error("Dataset with identifier does not exist.", "DM00010")
        if match and method == "GET":
            return 200, {}, self.records[match.group(1)]
        if match and method == "PATCH":
            return self._patch(match.group(1), headers.get("content-type", ""), body)
        return 404, {}, _error("No such route", "DM00404")

    def _token(self, method: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], Any]:
        form = parse_qs(raw.decode())
        expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        self.log.append(Logged(method, "/ClientAuth/get-token", headers.get("content-type"), form.get("scope")))
        if method != "POST" or headers.get("authorization") != expected:
            return 401, {}, {"error": "invalid_client"}
        if form.get("grant_type") != ["client_credentials"] or set(form.get("scope", [""])[0].split()) < {"publish"}:
            return 400, {}, {"error": "invalid_scope"}
        token = secrets.token_urlsafe(16)
        self.tokens[token] = time.monotonic() + self.token_lifetime
        return 200, {}, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime}

    def _authorised(self, headers: dict[str, str]) -> bool:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        return self.tokens.get(token, 0) > time.monotonic()

    def _filter(self, text: str) -> tuple[int, dict[str, str], Any]:
        if len(text) > 30:
            return (
                400,
                {},
                _error("Validation failures", "DM00012", ("the filter is longer than 30 characters", "/filter")),
            )
        needle = text.lower()
        found = [
            {"identifier": r["identifier"], "title": r.get("title"), "supplierIdentifier": r.get("supplierIdentifier")}
            for r in self.records.values()
            if any(
                needle in str(v).lower() for v in (r.get("title"), r.get("supplierIdentifier"), *r.get("keyword", []))
            )
        ]
        return 200, {}, {"items": found, "total": len(found)}

    def _create(self, body: Any) -> tuple[int, dict[str, str], Any]:
        problems = check(body, patch=False) + self._business_rules(body)
        if problems:
            return 400, {}, _error("Validation failures", "DM00012", *problems)
        if any(r.get("supplierIdentifier") == body["supplierIdentifier"] for r in self.records.values()):
            return 409, {}, _error("The dataset already exists; call PATCH instead", "DM00014")
        identifier = str(uuid.uuid4())
        self.records[identifier] = {**body, "identifier": identifier, "created": "2026-01-01T00:00:00Z"}
        return 201, {"Location": f"/datasets/{identifier}"}, self.records[identifier]

    def _patch(self, identifier: str, content_type: str, patch: Any) -> tuple[int, dict[str, str], Any]:
        current = self.records[identifier]
        if content_type.split(";")[0].strip() != PATCH_MEDIA_TYPE:
            self.violations.append(f"PATCH sent as {content_type!r}, not {PATCH_MEDIA_TYPE}")
            return 415, {}, _error("Unsupported media type", "DM00415")
        problems = check(patch, patch=True)
        if problems:
            return 400, {}, _error("Validation failures", "DM00012", *problems)
        self.violations.extend(_waste(current, patch))
        merged = merge(current, patch)
        problems = check(merged, patch=False) + self._business_rules(merged)
        if problems:
            return 400, {}, _error("Validation failures", "DM00012", *problems)
        self.records[identifier] = merged
        return 200, {}, merged

    def _business_rules(self, record: Any) -> list[tuple[str, str]]:
        publisher = record.get("publisher") if isinstance(record, dict) else None
        if self.known_publishers is not None and publisher is not None and publisher not in self.known_publishers:
            return [(f"The publisher '{publisher}' is not a registered organisation", "/publisher")]
        return []


def merge(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2, as the API applies it."""
    if not isinstance(patch, dict):
        return patch
    merged = copy.deepcopy(target) if isinstance(target, dict) else {}
    for gone in [name for name, value in patch.items() if value is None]:
        merged.pop(gone, None)
    merged.update({name: merge(merged.get(name), value) for name, value in patch.items() if value is not None})
    return merged


def check(document: Any, *, patch: bool) -> list[tuple[str, str]]:
    """(detail, location) for every rule ``document`` breaks; a patch may hold nulls for optional members."""
    if not isinstance(document, dict):
        return [("The body must be a JSON object", "")]
    problems = []
    for name, value in document.items():
        where = f"/{name}"
        if name not in MEMBERS:
            problems.append((f"The attribute '{name}' is not allowed", where))
        elif value is None:
            if not patch or name in REQUIRED:
                problems.append((f"The attribute '{name}' cannot be null", where))
        else:
            problems.extend(_member(name, value, where))
    if not patch:
        problems.extend(
            (f"The attribute '{name}' is required", f"/{name}") for name in sorted(REQUIRED - set(document))
        )
    return problems


def _member(name: str, value: Any, where: str) -> list[tuple[str, str]]:
    if name in LIMITS or name in CHOICES or name in DATES or name in TEXTS:
        if not isinstance(value, str):
            return [(f"The attribute '{name}' must be a string", where)]
        if name in LIMITS and len(value) > LIMITS[name]:
            return [(f"The attribute '{name}' is too long. It should be at most {LIMITS[name]} characters", where)]
        if name in CHOICES and value not in CHOICES[name]:
            return [(f"The attribute '{name}' of '{value}' is not one of the allowed values", where)]
        if name in DATES and not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", value):
            return [(f"The attribute '{name}' is not a date time", where)]
        return []
    if name in STRING_LISTS:
        limit = STRING_LISTS[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return [(f"The attribute '{name}' must be an array of strings", where)]
        return [
            (f"An item of '{name}' is too long", f"{where}/{i}")
            for i, v in enumerate(value)
            if limit and len(v) > limit
        ]
    if name == "license":
        return [] if isinstance(value, dict) else [("The attribute 'license' must be an object", where)]
    allowed = CONTACT_MEMBERS if name == "contactPoint" else DISTRIBUTION_MEMBERS
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        return [(f"The attribute '{name}' must be an array of objects", where)]
    return [
        (f"The attribute '{member}' is not allowed in '{name}'", f"{where}/{i}/{member}")
        for i, item in enumerate(value)
        for member in item
        if member not in allowed
    ]


def _waste(current: dict[str, Any], patch: dict[str, Any]) -> list[str]:
    """What makes a patch bigger than it needs to be: empty, unchanged members, deleting nothing."""
    if not patch:
        return ["an empty patch was sent"]
    wasted = []
    for name, value in patch.items():
        if value is None and name not in current:
            wasted.append(f"/{name}: null for a member the record does not have")
        elif value is not None and merge(current.get(name), value) == current.get(name):
            wasted.append(f"/{name}: sent but unchanged")
    return wasted


def _error(message: str, code: str, *problems: tuple[str, str]) -> dict[str, Any]:
    errors = [{"type": "Fatal", "detail": detail, "location": location} for detail, location in problems]
    return {"message": message, "code": code, "errors": errors}


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _handler_for(api: CatalogueApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            with api.lock:
                status, extra, body = api.handle(self.command, self.path, headers, raw)
            payload = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **extra}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = _serve

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    with CatalogueApi(port=args.port) as api:
        for name, value in api.env().items():
            print(f"export {name}='{value}'", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()

"""Real local HTTP servers emulating the APIs the newer source kinds read.

One threaded server answers for every host below (paths mirror the real hosts, so
``DATASYNC_URL_REWRITES`` maps production URLs onto it, as with ``tests/upstream.py``):

- a FHIR R4 terminology server (``ontology.nhs.uk``): ``ValueSet/$expand`` paged with
  ``count``/``offset``, OperationOutcome errors, and an OAuth2 client-credentials token endpoint
  whose tokens expire (and can be revoked to provoke a 401);
- Charitylog's Dizions API (``api.dizions.co.uk``): dictionaries behind header credentials, ETags;
- a DataPress portal (``data.london.gov.uk``): public and private dataset documents, downloads,
  and a redirect to a storage host (``airdrive-secure.s3-eu-west-1.amazonaws.com``);
- an ArcGIS FeatureServer (``services1.arcgis.com``): layer info with ``editingInfo`` and queries
  paged with ``resultOffset`` / ``exceededTransferLimit``.

Tests change the state (``fhir``, ``charitylog``, ``datapress``, ``arcgis``) and read ``requests``.

Run it by hand to try ``examples/catalogue.toml``: ``python -m tests.api_upstream`` serves every
example upstream (this one and ``tests/upstream.py``'s files) and prints the environment to use.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.api_examples import EXAMPLE_SECRETS, seed_examples
from tests.local_server import LocalServer
from tests.upstream import Scripted, Upstream

FHIR_HOST = "ontology.nhs.uk"
FHIR_BASE = f"https://{FHIR_HOST}/production1/fhir"
TOKEN_URL = f"https://{FHIR_HOST}/authorisation/auth/realms/nhs-digital-terminology/protocol/openid-connect/token"
DIZIONS_HOST = "api.dizions.co.uk"
DIZIONS_BASE = f"https://{DIZIONS_HOST}/v2"
DATAPRESS_HOST = "data.london.gov.uk"
STORAGE_HOST = "airdrive-secure.s3-eu-west-1.amazonaws.com"
ARCGIS_HOST = "services1.arcgis.com"
ARCGIS_SERVICES = f"https://{ARCGIS_HOST}/ESMARspQHYMw9BZ9/arcgis/rest/services"
HOSTS = (FHIR_HOST, DIZIONS_HOST, DATAPRESS_HOST, STORAGE_HOST, ARCGIS_HOST)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any, content_type: str = "application/json") -> Reply:
    return Reply(status, json.dumps(payload).encode("utf-8"), {"Content-Type": content_type})


def operation_outcome(status: int, code: str, text: str) -> Reply:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
    return json_reply(status, outcome, "application/fhir+json")


@dataclass
class Fhir:
    """Value sets by canonical URL (each a ValueSet with its full ``expansion.contains``)."""

    value_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    clients: dict[str, str] = field(default_factory=dict)
    token_lifetime: int = 3600
    tokens: dict[str, float] = field(default_factory=dict)
    token_requests: int = 0
    echo_refused_tokens: bool = False  # like servers that quote the token they refuse

    @property
    def auth_required(self) -> bool:
        return bool(self.clients)

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def token(self, form: dict[str, str]) -> Reply:
        self.token_requests += 1
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if form.get("grant_type") != "client_credentials" or self.clients.get(client_id) != secret or not secret:
            return json_reply(401, {"error": "unauthorized_client", "error_description": "Invalid client credentials"})
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_lifetime
        return json_reply(200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"})

    def expand(self, query: dict[str, str], headers: dict[str, str]) -> Reply:
        if self.auth_required:
            bearer = headers.get("Authorization", "").removeprefix("Bearer ")
            if self.echo_refused_tokens:
                return operation_outcome(401, "login", f"Authentication failed: token {bearer} is not valid")
            if self.tokens.get(bearer, 0) < time.monotonic():
                return operation_outcome(401, "login", "Authentication failed: no valid bearer token")
        canonical = query.get("url")
        if not canonical:
            return operation_outcome(400, "required", "Parameter 'url' is required for $expand")
        value_set = self.value_sets.get(canonical)
        if value_set is None:
            return operation_outcome(404, "not-found", f"Unable to find value set {canonical}")
        return json_reply(
            200, _page(value_set, int(query.get("offset", 0)), query.get("count")), "application/fhir+json"
        )


def _page(value_set: dict[str, Any], offset: int, count: str | None) -> dict[str, Any]:
    expansion = value_set["expansion"]
    concepts = expansion.get("contains", [])
    chosen = concepts[offset:] if count is None else concepts[offset : offset + int(count)]
    page_expansion = {key: value for key, value in expansion.items() if key != "contains"}
    page_expansion.update(offset=offset, total=len(concepts))
    if chosen:
        page_expansion["contains"] = chosen
    return {**value_set, "expansion": page_expansion}


@dataclass
class Charitylog:
    dictionaries: dict[tuple[str, str], Any] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)

    def dictionary(self, path: str, headers: dict[str, str], method: str) -> Reply:
        if method != "GET":
            return json_reply(405, {"error": f"{method} is not allowed on dictionaries"})
        if any(headers.get(name) != value for name, value in self.credentials.items()):
            return json_reply(401, {"error": "Invalid API credentials"})
        parts = [unquote(part) for part in path.split("/")]
        payload = self.dictionaries.get((parts[0], parts[1])) if len(parts) == 2 else None
        if payload is None:
            return json_reply(404, {"error": "Dictionary not found"})
        return _with_etag(json_reply(200, payload), headers)


@dataclass
class DataPress:
    """Datasets by id: the document, and the key a private one needs."""

    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)

    def add_resource(
        self, dataset_id: str, resource_id: str, body: bytes, fmt: str, *, title: str = "", order: int = 0
    ) -> str:
        """Publish a file in a dataset (hash and size computed as DataPress does); returns its URL."""
        url = f"https://{DATAPRESS_HOST}/download/{dataset_id}/{resource_id}/{title or resource_id}.{fmt}"
        self.files[urlsplit(url).path] = body
        self.datasets[dataset_id].setdefault("resources", {})[resource_id] = {
            "url": url,
            "order": order,
            "title": title or resource_id,
            "description": "",
            "format": fmt,
            "hash": hashlib.md5(body).hexdigest(),
            "size": len(body),
            "origin": f"/london/dataset/{dataset_id}/{resource_id}",
        }
        return url

    def replace_file(self, url: str, body: bytes, *, update_document: bool = True) -> None:
        path = urlsplit(url).path
        self.files[path] = body
        if update_document:
            for dataset in self.datasets.values():
                for resource in dataset.get("resources", {}).values():
                    if resource["url"] == url:
                        resource.update(hash=hashlib.md5(body).hexdigest(), size=len(body))

    def dataset(self, dataset_id: str, headers: dict[str, str]) -> Reply:
        document = self.datasets.get(dataset_id)
        if document is None:
            return json_reply(404, {"error": "Dataset not found"})
        if not self._may_read(dataset_id, headers):
            return json_reply(403, {"error": "API key does not have read permissions to this private dataset"})
        return json_reply(200, document)

    def download(self, host: str, path: str, headers: dict[str, str]) -> Reply:
        """A file on the site (private ones need the key), or on storage (pre-signed: no key)."""
        if path in self.redirects:
            return Reply(302, b"", {"Location": self.redirects[path]})
        dataset_id = path.split("/")[2] if path.count("/") >= 3 else ""
        if path not in self.files:
            return json_reply(404, {"error": "File not found"})
        if host == DATAPRESS_HOST and not self._may_read(dataset_id, headers):
            return json_reply(403, {"error": "Forbidden"})
        return _with_etag(Reply(200, self.files[path], {"Content-Type": _file_type(path)}), headers)

    def _may_read(self, dataset_id: str, headers: dict[str, str]) -> bool:
        key = self.keys.get(dataset_id)
        return key is None or headers.get("Authorization") == key


@dataclass
class ArcGis:
    """Feature layers by service name: attributes in server order, and the layer's edit date."""

    layers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    max_record_count: int = 2000
    last_edit: dict[str, int] = field(default_factory=dict)

    def answer(self, path: str, query: dict[str, str]) -> Reply:
        parts = path.split("/")  # {service}/FeatureServer/0[/query]
        features = self.layers.get(parts[0])
        if features is None or len(parts) < 3 or parts[1] != "FeatureServer" or parts[2] != "0":
            return json_reply(200, {"error": {"code": 400, "message": "Invalid URL", "details": ["Invalid URL"]}})
        if len(parts) == 3:
            info: dict[str, Any] = {"name": parts[0], "maxRecordCount": self.max_record_count}
            if parts[0] in self.last_edit:
                info["editingInfo"] = {"lastEditDate": self.last_edit[parts[0]]}
            return json_reply(200, info)
        return json_reply(200, self._query(features, query))

    def _query(self, features: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        if query.get("where") != "1=1" or query.get("f") != "json":
            return {"error": {"code": 400, "message": "Unable to complete operation.", "details": ["bad where"]}}
        order = query.get("orderByFields")
        rows = sorted(features, key=lambda row: str(row.get(order))) if order else list(features)
        fields = query.get("outFields", "*")
        wanted = None if fields == "*" else fields.split(",")
        offset = int(query.get("resultOffset", 0))
        count = min(int(query.get("resultRecordCount", self.max_record_count)), self.max_record_count)
        chosen = rows[offset : offset + count]
        page: dict[str, Any] = {
            "objectIdFieldName": "ObjectId",
            "features": [
                {"attributes": {k: v for k, v in row.items() if wanted is None or k in wanted}} for row in chosen
            ],
        }
        if offset + count < len(rows):
            page["exceededTransferLimit"] = True
        return page


class ApiUpstream(LocalServer):
    hosts = HOSTS

    def __init__(self) -> None:
        self.fhir = Fhir()
        self.charitylog = Charitylog()
        self.datapress = DataPress()
        self.arcgis = ArcGis()
        self.scripts: dict[str, list[Scripted]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.listen(_handler_for(self))

    @property
    def base_url(self) -> str:
        return self.origin

    def script(self, url: str, *responses: Scripted) -> None:
        """Canned responses for a production URL (exact path and query), served before the emulation."""
        parts = urlsplit(url)
        with self.lock:
            key = f"/{parts.hostname}{parts.path}" + (f"?{parts.query}" if parts.query else "")
            self.scripts.setdefault(key, []).extend(responses)

    def hits(self, url_prefix: str) -> list[tuple[str, dict[str, str]]]:
        """(method, headers) of every request whose production URL starts with ``url_prefix``."""
        parts = urlsplit(url_prefix)
        prefix = f"/{parts.hostname}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        with self.lock:
            return [(method, headers) for method, path, headers in self.requests if unquote(path).startswith(prefix)]

    def route(self, method: str, path: str, headers: dict[str, str], form: dict[str, str]) -> Reply:
        parts = urlsplit(path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        host, _, rest = unquote(parts.path).lstrip("/").partition("/")
        rest = "/" + rest
        with self.lock:
            if host == FHIR_HOST and rest == urlsplit(TOKEN_URL).path and method == "POST":
                return self.fhir.token(form)
            if host == FHIR_HOST and rest == "/production1/fhir/ValueSet/$expand":
                return self.fhir.expand(query, headers)
            if host == DIZIONS_HOST and rest.startswith("/v2/dictionary/"):
                raw = urlsplit(path).path.split("/v2/dictionary/", 1)[1]
                return self.charitylog.dictionary(raw, headers, method)
            if host == DATAPRESS_HOST and rest.startswith("/api/dataset/"):
                return self.datapress.dataset(rest.removeprefix("/api/dataset/").strip("/"), headers)
            if host in (DATAPRESS_HOST, STORAGE_HOST) and method == "GET":
                return self.datapress.download(host, rest, headers)
            services = urlsplit(ARCGIS_SERVICES).path
            if host == ARCGIS_HOST and rest.startswith(services + "/"):
                return self.arcgis.answer(rest.removeprefix(services + "/"), query)
        return json_reply(404, {"error": f"no route for {method} {path}"})


def _with_etag(reply: Reply, headers: dict[str, str]) -> Reply:
    etag = '"' + hashlib.sha256(reply.body).hexdigest()[:16] + '"'
    if headers.get("If-None-Match") == etag:
        return Reply(304, b"", {"ETag": etag})
    reply.headers["ETag"] = etag
    return reply


def _file_type(path: str) -> str:
    if path.endswith(".csv"):
        return "text/csv"
    return "application/pdf" if path.endswith(".pdf") else "application/octet-stream"


def _handler_for(upstream: ApiUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._answer("GET", {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8")
            self._answer("POST", {key: values[0] for key, values in parse_qs(body).items()})

        def do_PUT(self) -> None:
            self._answer("PUT", {})

        def _answer(self, method: str, form: dict[str, str]) -> None:
            headers = dict(self.headers)
            with upstream.lock:
                upstream.requests.append((method, self.path, headers))
                queue = upstream.scripts.get(unquote(self.path)) or upstream.scripts.get(self.path)
                scripted = queue.pop(0) if queue else None
            if scripted is not None:
                reply = Reply(scripted.status, scripted.body or b"", scripted.headers)
            else:
                reply = upstream.route(method, self.path, headers, form)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.status != 304:
                self.wfile.write(reply.body)

    return Handler


def main() -> None:
    with Upstream() as files, ApiUpstream() as apis:
        seed_examples(apis)
        print(f"export DATASYNC_URL_REWRITES='{files.rewrites()},{apis.rewrites()}'")
        for name, value in EXAMPLE_SECRETS.items():
            print(f"export {name}='{value}'")
        print("datasync sync --catalogue examples/catalogue.toml", flush=True)
        apis.thread.join()


if __name__ == "__main__":
    main()

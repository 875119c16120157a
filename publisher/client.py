"""The national data catalogue's API (seed 004): OAuth2 client credentials, datasets, and look-up.

One place decides how datasync behaves towards the catalogue: a bearer token cached until it
expires and fetched again once on a 401; 429 and 5xx answers (and dropped connections) retried
with exponential backoff, honouring ``Retry-After``; every other answer turned into a
``CatalogueApiError`` carrying the catalogue's own ``{message, code, errors}``. The token and the
client secret never appear in an error or a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from scrapers.errors import redact
from scrapers.http import parse_retry_after
from worker.problems import Problem

log = logging.getLogger(__name__)

SCOPES = "discover publish"
# RFC 7396 registers application/merge-patch+json, but this API's description declares
# application/json for the PATCH body; send what the API declares.
PATCH_MEDIA_TYPE = "application/json"
FILTER_LIMIT = 30  # characters the look-up's ?filter= accepts
TOKEN_MARGIN_SECONDS = 30.0
RETRYABLE = frozenset({429, 500, 502, 503, 504})
EXISTS = "DM00014"
NOT_FOUND = "DM00010"


class CatalogueApiError(Exception):
    """The catalogue refused or could not answer; ``code`` is its own (``DM00012``) or ours (``http_503``)."""

    def __init__(self, code: str, message: str, problems: Sequence[Problem] = (), status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = tuple(problems)
        self.status = status


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    token_url: str
    client_id: str
    client_secret: str
    user_agent: str
    timeout: tuple[float, float] = (10.0, 30.0)
    max_attempts: int = 4
    backoff_seconds: float = 2.0
    wait_max_seconds: float = 120.0


class CatalogueClient:
    def __init__(
        self,
        config: ClientConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.session = requests.Session()
        self.session.headers["User-Agent"] = config.user_agent
        self.sleep = sleep
        self.clock = clock
        self._token: tuple[str, float] | None = None
        self._refused: CatalogueApiError | None = None  # credentials refused: do not ask again this run

    def close(self) -> None:
        self.session.close()

    def get_dataset(self, catalogue_id: str) -> dict[str, Any] | None:
        """The catalogue's record, or None when it has none with this id (404 ``DM00010``)."""
        try:
            return _object(self._call("GET", f"/datasets/{catalogue_id}"))
        except CatalogueApiError as error:
            if error.status == 404:
                return None
            raise

    def create_dataset(self, record: dict[str, Any]) -> str | None:
        """The new record's id (from ``Location``), or None when one exists already (409 ``DM00014``)."""
        try:
            response = self._send("POST", "/datasets", json=record)
        except CatalogueApiError as error:
            if error.status == 409 and error.code == EXISTS:
                return None
            raise
        location = response.headers.get("Location", "")
        catalogue_id = urlsplit(location).path.rstrip("/").rpartition("/")[2]
        if not catalogue_id:
            raise CatalogueApiError("no_location", "the catalogue created the record but sent no Location header")
        return catalogue_id

    def patch_dataset(self, catalogue_id: str, patch: dict[str, Any]) -> None:
        self._send("PATCH", f"/datasets/{catalogue_id}", json=patch, content_type=PATCH_MEDIA_TYPE)

    def find_by_supplier_identifier(self, supplier_identifier: str) -> str | None:
        """The id of the record with exactly this supplier identifier (the filter also matches titles)."""
        found = self._call("GET", "/cataloged-resources", params={"filter": supplier_identifier[:FILTER_LIMIT]})
        items = (
            found if isinstance(found, list) else next((v for v in _object(found).values() if isinstance(v, list)), [])
        )
        ids = {
            str(item.get("identifier") or item.get("id"))
            for item in items
            if isinstance(item, dict) and item.get("supplierIdentifier") == supplier_identifier
        }
        if len(ids) > 1:
            raise CatalogueApiError(
                "ambiguous", f"{len(ids)} catalogue records have supplier identifier {supplier_identifier!r}"
            )
        return ids.pop() if ids else None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise CatalogueApiError("bad_response", f"{method} {path}: the catalogue's answer is not JSON") from exc

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> requests.Response:
        """One logical request: refreshed once on 401, retried on 429/5xx/connection errors."""
        refreshed = False
        attempt = 1
        while True:
            headers = {"Authorization": f"Bearer {self._bearer()}", "Accept": "application/json"}
            if json is not None:
                headers["Content-Type"] = content_type
            response = self._exchange(method, path, attempt, headers=headers, json=json, params=params)
            if response is None or response.status_code in RETRYABLE:
                if attempt >= self.config.max_attempts:
                    raise _failure(method, path, response)
                self.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            if response.status_code == 401 and not refreshed:
                self._token, refreshed = None, True
                continue
            if response.status_code >= 400:
                raise _failure(method, path, response)
            return response

    def _exchange(self, method: str, path: str, attempt: int, **kwargs: Any) -> requests.Response | None:
        """The response, or None when the connection failed (worth another attempt)."""
        try:
            response = self.session.request(method, self.config.base_url + path, timeout=self.config.timeout, **kwargs)
        except requests.RequestException as exc:
            log.warning("catalogue %s %s: attempt %d could not connect (%s)", method, path, attempt, type(exc).__name__)
            return None
        log.info("catalogue %s %s: HTTP %d (attempt %d)", method, path, response.status_code, attempt)
        return response

    def _delay(self, attempt: int, response: requests.Response | None) -> float:
        """Exponential backoff, or the server's ``Retry-After`` when longer; capped either way."""
        backoff = self.config.backoff_seconds * 2.0 ** (attempt - 1)
        asked = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        return min(max(backoff, asked or 0.0), self.config.wait_max_seconds)

    def _bearer(self) -> str:
        if self._refused is not None:
            raise self._refused
        if self._token is None or self.clock() >= self._token[1]:
            self._token = self._fetch_token()
        return self._token[0]

    def _fetch_token(self) -> tuple[str, float]:
        """OAuth2 client credentials (RFC 6749 4.4), the client authenticating with HTTP Basic."""
        config = self.config
        try:
            response = self.session.post(
                config.token_url,
                data={"grant_type": "client_credentials", "scope": SCOPES},
                auth=(config.client_id, config.client_secret),
                headers={"Accept": "application/json"},
                timeout=config.timeout,
            )
        except requests.RequestException as exc:
            raise CatalogueApiError("token", f"token endpoint {config.token_url}: could not connect") from exc
        if response.status_code != 200:
            self._refused = CatalogueApiError(
                "token",
                f"token endpoint {config.token_url}: HTTP {response.status_code} "
                "(check DATASYNC_PUBLISH_CLIENT_ID and DATASYNC_PUBLISH_CLIENT_SECRET)",
            )
            raise self._refused
        try:
            body = _object(response.json())
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise CatalogueApiError(
                "token", f"token endpoint {config.token_url}: no access_token in the answer"
            ) from exc
        return token, self.clock() + max(0.0, lifetime - TOKEN_MARGIN_SECONDS)


def _failure(method: str, path: str, response: requests.Response | None) -> CatalogueApiError:
    """The catalogue's own error document when it sent one, else the HTTP status."""
    if response is None:
        return CatalogueApiError("connection", f"{method} {path}: the catalogue could not be reached")
    try:
        body = _object(response.json())
    except ValueError:
        body = {}
    errors = body.get("errors")
    problems = (
        [Problem.from_json(item) for item in errors if isinstance(item, dict)] if isinstance(errors, list) else []
    )
    code = str(body.get("code") or f"http_{response.status_code}")
    detail = str(body.get("message") or response.reason or "error")
    message = redact(f"{method} {path}: HTTP {response.status_code}: {detail}")
    return CatalogueApiError(code, message, problems, status=response.status_code)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}

"""OAuth2 client credentials, for upstreams that want a bearer token (the NHS terminology server).

The client id and secret come from environment variables the catalogue names, never from the
catalogue itself. A token is cached per process until shortly before it expires; a 401 from the
API renews it once (``renew=True``).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from scrapers.errors import PermanentError, SyncError
from scrapers.http import HttpClient, host_of
from scrapers.json_api import load_json

EXPIRY_MARGIN_SECONDS = 30.0
DEFAULT_LIFETIME_SECONDS = 60.0
_tokens: dict[tuple[str, str], tuple[str, float]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class ClientCredentials:
    token_url: str
    client_id_env: str
    client_secret_env: str
    scope: str | None = None

    def credentials(self) -> tuple[str, str]:
        values = []
        for name in (self.client_id_env, self.client_secret_env):
            value = os.environ.get(name, "")
            if not value:
                raise PermanentError("missing_credentials", f"{self.token_url}: environment variable {name} is not set")
            values.append(value)
        return values[0], values[1]

    def secrets(self) -> list[str]:
        """The secret and any cached token (the client id is redacted too: it names the account)."""
        found = [os.environ.get(name, "") for name in (self.client_id_env, self.client_secret_env)]
        with _lock:
            found += [token for (url, _), (token, _) in _tokens.items() if url == self.token_url]
        return [value for value in found if value]

    def bearer(self, http: HttpClient, *, renew: bool = False) -> str:
        """A current access token: the cached one, or a new one from the token endpoint."""
        client_id, client_secret = self.credentials()
        key = (self.token_url, client_id)
        with _lock:
            cached = _tokens.get(key)
        if cached and not renew and cached[1] > time.monotonic() + EXPIRY_MARGIN_SECONDS:
            return cached[0]
        token, lifetime = self._request(http, client_id, client_secret)
        with _lock:
            _tokens[key] = (token, time.monotonic() + lifetime)
        return token

    def forget(self) -> None:
        """Drop cached tokens for this endpoint (tests, and a refused token)."""
        with _lock:
            for key in [key for key in _tokens if key[0] == self.token_url]:
                del _tokens[key]

    def _request(self, http: HttpClient, client_id: str, client_secret: str) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
        if self.scope:
            form["scope"] = self.scope
        try:
            document = http.post_form(self.token_url, form, allowed_hosts=frozenset({host_of(self.token_url)}))
        except SyncError as error:
            if error.kind in ("http_400", "http_401", "http_403"):
                raise PermanentError(
                    "auth_refused",
                    f"{self.token_url}: the token endpoint refused the client credentials in "
                    f"{self.client_id_env} / {self.client_secret_env} ({error.kind.replace('_', ' ').upper()})",
                ) from error
            raise
        payload = load_json(document)
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise PermanentError("auth_failed", f"{self.token_url}: the token response has no 'access_token'")
        lifetime = payload.get("expires_in", DEFAULT_LIFETIME_SECONDS)
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_LIFETIME_SECONDS
        return token, float(lifetime)

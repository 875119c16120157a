"""Errors a sync can end in, split by what the worker should do next, and the redaction of secrets.

``TransientError`` is worth retrying (the upstream may recover); ``PermanentError`` is not (the
same request will fail the same way until a person changes something). ``kind`` is a short
machine-readable slug recorded in ``sync_runs.error_kind``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

REDACTED = "[redacted]"
# Userinfo in URLs (user:password@ or a bare TOKEN@), and query parameters whose names say they
# carry a credential. Redaction errs on the side of hiding too much.
_URL_USERINFO = re.compile(r"(?<=://)[^/?#@\s]+@")
_SECRET_PARAMS = re.compile(
    r"([?&](?:[\w-]*(?:key|token|secret|password|passwd|signature|sig|auth)[\w-]*)=)[^&#\s'\"]+",
    re.IGNORECASE,
)
# Catalogue validation must not refuse innocent names such as "author" or "design", so it looks
# at whole words of a parameter name ("apiKey", "access_token", "subscription-key").
_CREDENTIAL_WORDS = frozenset(
    "key apikey token secret password passwd pwd sig signature auth authorization credential credentials".split()
)
_CREDENTIAL_SUFFIXES = ("apikey", "token", "secret", "password")
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove credentials from text bound for logs, errors and ``sync_runs``, in any form they take."""
    forms = secret_forms(secrets)
    if forms:
        text = re.compile("|".join(map(re.escape, forms)), re.IGNORECASE).sub(REDACTED, text)
    text = _URL_USERINFO.sub(REDACTED + "@", text)
    return _SECRET_PARAMS.sub(r"\1" + REDACTED, text)


def secret_forms(secrets: Iterable[str]) -> list[str]:
    """Every way a secret can be written in a message, longest first: as is and trimmed, escaped
    as by ``repr`` or JSON (twice over, for a repr of a JSON body), and percent-encoded."""
    forms: set[str] = set()
    for secret in secrets:
        cores = {secret, secret.strip()} - {""}
        once = {escaped for core in cores for escaped in _escapes(core)}
        twice = {escaped for form in once for escaped in _escapes(form)}
        forms |= {encoded for form in twice for encoded in (form, quote(form, safe=""), quote(form), quote_plus(form))}
    return sorted(forms, key=len, reverse=True)


def _escapes(text: str) -> set[str]:
    """``text`` as written inside a Python or JSON string literal; ``repr`` escapes ``'`` only when
    it picks single quotes, which depends on the whole string, so both spellings are included."""
    in_single_quotes = repr(text + '"')[1:-2]
    return {
        text,
        repr(text)[1:-1],
        in_single_quotes,
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
    }


def url_credentials(url: str) -> str | None:
    """What in ``url`` is a credential (userinfo, or a query parameter named like one), or None."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return "user:password@ or TOKEN@ before the host"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        words = {word.lower() for word in _NAME_WORDS.findall(name)}
        if words & _CREDENTIAL_WORDS or any(word.endswith(_CREDENTIAL_SUFFIXES) for word in words):
            return f"the query parameter {name!r}"
    return None


class SyncError(Exception):
    transient = False

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.body = body  # the start of an HTTP error response, for kinds that explain errors in it (FHIR)


class TransientError(SyncError):
    transient = True


class PermanentError(SyncError):
    transient = False

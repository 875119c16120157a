"""Errors a sync can end in, split by what the worker should do next.

``TransientError`` is worth retrying (the upstream may recover); ``PermanentError`` is not (the
same request will fail the same way until a person changes something). ``kind`` is a short
machine-readable slug recorded in ``sync_runs.error_kind``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# user:password@ in URLs, and query parameters whose names say they carry a credential.
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")
_SECRET_PARAMS = re.compile(
    r"([?&](?:[\w-]*(?:key|token|secret|password|passwd|signature|sig|auth)[\w-]*)=)[^&#\s'\"]+",
    re.IGNORECASE,
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove credentials from text bound for logs, errors and ``sync_runs``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _URL_USERINFO.sub("[redacted]@", text)
    return _SECRET_PARAMS.sub(r"\1[redacted]", text)


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

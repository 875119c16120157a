"""API keys the way the platform does them: a recognisable prefix (secret scanners find a leaked
one), shown once, stored only as a SHA-256 hash, expiring, revocable at once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.monitoring import API_ROLES, ApiKey
from worker.health import iso

KEY_PREFIX = "dsk_"
SHOWN_PREFIX = 12  # characters kept for display: the marker plus 8 random ones
LAST_USED_EVERY = timedelta(minutes=1)


class ApiKeyError(Exception):
    """The key operation cannot be done; the message says why."""


@dataclass(frozen=True)
class Caller:
    """Who is calling the API: anonymous (``key_id`` None) or a key with its role."""

    key_id: int | None = None
    name: str | None = None
    role: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.key_id is not None


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def create_key(
    sessions: sessionmaker[Session], name: str, role: str, expires_at: datetime | None, now: datetime
) -> tuple[ApiKey, str]:
    """A new key; the raw secret is returned here and never again."""
    if role not in API_ROLES:
        raise ApiKeyError(f"role must be one of {', '.join(API_ROLES)}, not {role!r}")
    if not name.strip():
        raise ApiKeyError("the key needs a name saying who or what uses it")
    if expires_at is not None and expires_at <= now:
        raise ApiKeyError("the expiry date is already past")
    raw = KEY_PREFIX + secrets.token_urlsafe(40)
    key = ApiKey(
        name=name.strip()[:255],
        prefix=raw[:SHOWN_PREFIX],
        key_hash=hash_key(raw),
        role=role,
        created_at=now,
        expires_at=expires_at,
    )
    with sessions.begin() as session:
        session.add(key)
    return key, raw


def list_keys(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Every key without its secret: what an operator needs to recognise and revoke one."""
    with sessions() as session:
        keys = session.scalars(select(ApiKey).order_by(ApiKey.id))
        return [
            {
                "id": k.id,
                "prefix": k.prefix,
                "name": k.name,
                "role": k.role,
                "created_at": iso(k.created_at),
                "last_used_at": iso(k.last_used_at),
                "expires_at": iso(k.expires_at),
                "revoked_at": iso(k.revoked_at),
            }
            for k in keys
        ]


def revoke_key(sessions: sessionmaker[Session], ident: str, now: datetime) -> ApiKey:
    """Revoke by id or displayed prefix; effective for the very next request."""
    with sessions.begin() as session:
        query = select(ApiKey).where(ApiKey.prefix == ident)
        if ident.isdigit():
            query = select(ApiKey).where(ApiKey.id == int(ident))
        matches = list(session.scalars(query))
        if len(matches) != 1:
            raise ApiKeyError(f"no single API key with id or prefix {ident!r} (see `datasync apikey list`)")
        key = matches[0]
        if key.revoked_at is None:
            key.revoked_at = now
        return key


def authenticate(sessions: sessionmaker[Session], raw: str, now: datetime) -> Caller | None:
    """The caller a raw key belongs to, or None if it is unknown, expired or revoked."""
    digest = hash_key(raw)
    with sessions() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            return None
        if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
            return None
        caller = Caller(key.id, key.name, key.role)
        stale_use = key.last_used_at is None or now - key.last_used_at >= LAST_USED_EVERY
    if stale_use:
        with sessions.begin() as session:
            session.get_one(ApiKey, caller.key_id).last_used_at = now
    return caller

"""Tables the monitoring surfaces need: API keys, the scheduler heartbeat, and webhook memory.

They live beside the platform's tables but are datasync's own, like ``sync_state``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.schema import Base
from models.types import utcnow

API_ROLES = ("viewer", "operator")


class ApiKey(Base):
    """A named key for the HTTP API; only its SHA-256 hash is stored, the secret is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class SchedulerHeartbeat(Base):
    """Written by beat each time it sends a scan, so its liveness is visible from the store."""

    __tablename__ = "scheduler_heartbeats"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    beat_at: Mapped[datetime]
    interval_seconds: Mapped[float] = mapped_column(Float)
    host: Mapped[str] = mapped_column(String(255))


class NotifiedState(Base):
    """The last health state a webhook announced per dataset, so only transitions are sent."""

    __tablename__ = "webhook_states"

    dataset_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime]

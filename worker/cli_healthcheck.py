"""``datasync healthcheck worker|beat``: the container health checks (exit 0 healthy, 1 not).

A worker is healthy when its own Celery node answers a ping over the broker; beat is healthy while
a beat holds RedBeat's lock in Redis (beat renews it every loop and it expires soon after beat
stops), so the check sees the scheduler's liveness, not just a running process.
"""

from __future__ import annotations

import socket
from enum import StrEnum
from typing import Annotated, NoReturn

import typer

from worker.console import stderr
from worker.settings import get_settings


class Role(StrEnum):
    worker = "worker"
    beat = "beat"


def register(app: typer.Typer) -> None:
    app.command("healthcheck")(healthcheck)


def healthcheck(
    role: Annotated[Role, typer.Argument(help="Which process to check: worker or beat.")],
    node: Annotated[
        str | None, typer.Option(help="The worker's node name (default: celery@<this host>, Celery's own default).")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for an answer.")] = 5.0,
) -> None:
    """Exit 0 if this host's worker answers a ping, or a beat holds the schedule lock; else one line and exit 1."""
    if not get_settings().broker_url:
        unhealthy("DATASYNC_BROKER_URL is not set: the health checks are for the worker and beat containers")
    try:
        message = worker_answers(node or default_node(), timeout) if role is Role.worker else beat_lock(timeout)
    except typer.Exit:
        raise
    except Exception as exc:  # any broker failure is one line for the container runtime's log, never a traceback
        unhealthy(f"{role.value}: broker unreachable: {type(exc).__name__}: {exc}")
    typer.echo(message)


def default_node() -> str:
    return f"celery@{socket.gethostname()}"


def worker_answers(node: str, timeout: float) -> str:
    from worker.celery_app import app

    replies = app.control.ping(destination=[node], timeout=timeout)
    if not any(node in reply for reply in replies):
        unhealthy(f"worker {node}: no answer to a ping within {timeout:g} s")
    return f"worker {node}: ok"


def beat_lock(timeout: float) -> str:
    import redis
    from redbeat.schedulers import RedBeatConfig

    from worker.celery_app import app

    config = RedBeatConfig(app)
    client = redis.Redis.from_url(config.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
    remaining_ms = client.pttl(config.lock_key)
    if remaining_ms < 0:
        unhealthy(f"beat: no beat holds the schedule lock {config.lock_key!r}")
    return f"beat: schedule lock {config.lock_key!r} held (expires in {remaining_ms / 1000:.0f} s unless renewed)"


def unhealthy(message: str) -> NoReturn:
    stderr().print(f"unhealthy: {message}")
    raise typer.Exit(1)

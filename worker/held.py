"""Which broker messages each worker holds, so a killed worker's come back within a minute, not an hour.

A worker holds every message it has received and not yet acknowledged (``task_acks_late``): the
one each pool process runs, a message prefetched while the pool is busy, and countdown messages
kept in memory until due (a retry's backoff, the scan's jitter, a task sent back to wait for its
host or lease). kombu's Redis transport keeps each in its ``unacked`` hash under a delivery tag that
does not say which worker holds it, and hands it back only after the visibility timeout (an hour).
Retries and scan-queued syncs come back sooner through their pending marks (``worker.pending``),
but a manual re-sync of a fresh dataset has nothing else to bring it back.

So each worker's main process records the tag of every message it receives as held by it
(``datasync:held``: tag -> worker; a message handed back and taken again moves to its new holder)
and keeps ``datasync:alive:<worker>`` fresh from a thread. Beat's scan hands back, with kombu's
own restore, every message still unacknowledged that a worker whose alive key has expired holds:
back on the queue within ALIVE_SECONDS plus one scan interval of the kill. A worker too stalled
to refresh its key for ALIVE_SECONDS gets its messages delivered twice; the second delivery is a
skipped run (``busy``, ``done``, ``not_due``, ``superseded``), never a second sync.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

import redis
from celery import Celery
from celery.signals import task_received, worker_ready

from worker import pending

log = logging.getLogger(__name__)
ALIVE_SECONDS = 30.0
REFRESH_SECONDS = 5.0
HELD = "datasync:held"  # delivery tag -> the worker holding it (a message restored and taken again moves)
_FORGET_IF_HELD_BY = (
    "if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('hdel', KEYS[1], ARGV[1]) end return 0"
)
_heartbeats: dict[int, str] = {}  # this process's worker name, once its heartbeat thread runs


def alive_key(worker: str) -> str:
    return f"datasync:alive:{worker}"


def unacked_key(app: Celery) -> str:
    return str(app.conf.broker_transport_options.get("unacked_key", "unacked"))


def record(client: redis.Redis, worker: str, tag: str) -> None:
    """Note that ``worker`` holds the message ``tag``, and that it is alive (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.set(alive_key(worker), "1", px=int(ALIVE_SECONDS * 1000))
    pipe.hset(HELD, tag, worker)
    pipe.execute()


def refresh(client: redis.Redis, worker: str, unacked: str) -> None:
    """Keep ``worker`` alive, and forget the tags it held that the broker no longer holds (acknowledged)."""
    client.set(alive_key(worker), "1", px=int(ALIVE_SECONDS * 1000))
    mine = [tag for tag, holder in holders(client).items() if holder == worker]
    if not mine:
        return
    pipe = client.pipeline(transaction=False)
    for tag in mine:
        pipe.hexists(unacked, tag)
    for tag, there in zip(mine, pipe.execute(), strict=True):
        if not there:
            forget(client, tag, worker)


def holders(client: redis.Redis) -> dict[str, str]:
    return {_text(tag): _text(worker) for tag, worker in client.hgetall(HELD).items()}


def forget(client: redis.Redis, tag: str, worker: str) -> bool:
    """Drop ``tag`` from the held messages if ``worker`` still holds it; whether it did."""
    return bool(client.eval(_FORGET_IF_HELD_BY, 1, HELD, tag, worker))


def restore_dead_workers_messages(app: Celery) -> int:
    """Put back on their queues the unacknowledged messages of every worker no longer alive; how many."""
    client = pending.redis_client()
    if client is None:
        return 0
    try:
        return _restore(app, client)
    except Exception as exc:  # a broker outage must not stop the scan; the next one tries again
        log.warning("could not hand back dead workers' messages: %s", exc)
        return 0


def _restore(app: Celery, client: redis.Redis) -> int:
    held = holders(client)
    workers = sorted(set(held.values()))
    alive = client.pipeline(transaction=False)
    for worker in workers:
        alive.exists(alive_key(worker))
    dead = {worker for worker, there in zip(workers, alive.execute(), strict=True) if not there}
    if not dead:
        return 0
    restored = 0
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for tag, worker in held.items():
            # Forgotten first: once back on the queue, the message may be taken and recorded again at once.
            if worker in dead and forget(client, tag, worker) and client.hexists(qos.unacked_key, tag):
                qos.restore_by_tag(tag)  # the transaction kombu's own restore runs
                restored += 1
    log.warning("worker(s) gone: %s; %d unacknowledged message(s) back on the queue", ", ".join(sorted(dead)), restored)
    return restored


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _on_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    """In the worker's main process, as a message arrives and before its task runs anywhere."""
    client = pending.redis_client()
    if client is None or request is None:
        return
    worker = _keep_alive(client, sender)
    with contextlib.suppress(redis.RedisError):  # unrecorded, it waits for the visibility timeout, as before
        record(client, worker, str(request.message.delivery_tag))


def _on_ready(sender: Any = None, **_: Any) -> None:
    client = pending.redis_client()
    if client is not None:
        _keep_alive(client, sender)


def _keep_alive(client: redis.Redis, consumer: Any) -> str:
    """This process's worker name; its heartbeat thread started on first use."""
    pid = os.getpid()
    if pid not in _heartbeats:
        name = f"{getattr(consumer, 'hostname', None) or socket.gethostname()}:{pid}"
        _heartbeats[pid] = name
        unacked = unacked_key(consumer.app)
        threading.Thread(target=_beat, args=(client, name, unacked), name="datasync-alive", daemon=True).start()
    return _heartbeats[pid]


def _beat(client: redis.Redis, worker: str, unacked: str) -> None:
    pause = threading.Event()
    while True:
        try:
            refresh(client, worker, unacked)
        except redis.RedisError as exc:  # a broker outage: the messages are lost to it anyway
            log.warning("could not record that this worker is alive: %s", exc)
        pause.wait(REFRESH_SECONDS)


task_received.connect(_on_received)
worker_ready.connect(_on_ready)

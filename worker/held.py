"""Which broker messages each worker holds, so a killed worker's come back within a minute, not an hour.

A worker holds every message it has received and not yet acknowledged (``task_acks_late``): the
one each pool process runs, a message prefetched while the pool is busy, and countdown messages
kept in memory until due (a retry's backoff, the scan's jitter, a task sent back to wait for its
host or lease). kombu's Redis transport keeps each in its ``unacked`` hash under a delivery tag that
does not say which worker holds it, and hands it back only after the visibility timeout (an hour).
Retries and scan-queued syncs come back sooner through their pending marks (``worker.pending``),
but a manual re-sync of a fresh dataset has nothing else to bring it back.

So each worker's main process records the tag of every message it receives under its own name
(``datasync:held:<worker>``) and keeps ``datasync:alive:<worker>`` fresh from a thread. Beat's scan
hands back, with kombu's own restore, every message still unacknowledged of a worker whose alive
key has expired, then forgets that worker: back on the queue within ALIVE_SECONDS plus one scan
interval of the kill. A worker too stalled to refresh its key for ALIVE_SECONDS gets its messages
delivered twice; the second delivery is a skipped run (``busy``, ``done``, ``not_due``,
``superseded``), never a second sync.
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
WORKERS = "datasync:workers"
_heartbeats: dict[int, str] = {}  # this process's worker name, once its heartbeat thread runs


def held_key(worker: str) -> str:
    return f"datasync:held:{worker}"


def alive_key(worker: str) -> str:
    return f"datasync:alive:{worker}"


def unacked_key(app: Celery) -> str:
    return str(app.conf.broker_transport_options.get("unacked_key", "unacked"))


def record(client: redis.Redis, worker: str, tag: str, task_id: str) -> None:
    """Note that ``worker`` holds the message ``tag``, and that it is alive (one round trip)."""
    pipe = client.pipeline(transaction=False)
    _note_alive(pipe, worker)
    pipe.hset(held_key(worker), tag, task_id)
    pipe.execute()


def refresh(client: redis.Redis, worker: str, unacked: str) -> None:
    """Keep ``worker`` alive, and forget the tags the broker no longer holds (acknowledged)."""
    pipe = client.pipeline(transaction=False)
    _note_alive(pipe, worker)
    pipe.hkeys(held_key(worker))
    tags: list[bytes] = pipe.execute()[-1]
    if not tags:
        return
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        pipe.hexists(unacked, tag)
    gone = [tag for tag, there in zip(tags, pipe.execute(), strict=True) if not there]
    if gone:
        client.hdel(held_key(worker), *gone)


def _note_alive(pipe: Any, worker: str) -> None:
    pipe.set(alive_key(worker), "1", px=int(ALIVE_SECONDS * 1000))
    pipe.sadd(WORKERS, worker)


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
    workers = [_text(worker) for worker in client.smembers(WORKERS)]
    alive = client.pipeline(transaction=False)
    for worker in workers:
        alive.exists(alive_key(worker))
    dead = [worker for worker, there in zip(workers, alive.execute(), strict=True) if not there]
    if not dead:
        return 0
    restored = 0
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for worker in dead:
            for tag in client.hkeys(held_key(worker)):
                if client.hexists(qos.unacked_key, tag):
                    qos.restore_by_tag(_text(tag))  # the transaction kombu's own restore runs
                    restored += 1
            client.delete(held_key(worker))
            client.srem(WORKERS, worker)
            log.warning("worker %s is gone: its unacknowledged messages are back on the queue", worker)
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
        record(client, worker, str(request.message.delivery_tag), str(request.id))


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

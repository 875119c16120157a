"""Which broker messages each worker holds, so a lost one comes back within a minute, not an hour.

A worker holds every message it has received and not yet acknowledged (``task_acks_late``): the
one each pool process runs, a message prefetched while the pool is busy, and countdown messages
kept in memory until due (a retry's backoff, the scan's jitter, a task sent back to wait for its
host or lease). kombu's Redis transport keeps each in its ``unacked`` hash under a delivery tag that
does not say which worker holds it (``unacked_index`` has the time it was delivered), and hands it
back only after the visibility timeout (an hour). Retries and scan-queued syncs come back sooner
through their pending marks (``worker.pending``), but a manual re-sync of a fresh dataset has
nothing else to bring it back.

So each worker's main process records the tag of every message it receives as held by it
(``datasync:held``: tag -> worker) within milliseconds of kombu delivering it, and keeps
``datasync:alive:<worker>`` fresh from a thread; the broker transport forgets the tag in the same
transaction that acknowledges, rejects or restores the message (``worker.transport``). Beat's scan
hands back every message delivered more than ALIVE_SECONDS ago that no live worker holds: its
holder's alive key has expired, or nobody ever recorded it (its worker was killed between kombu's
delivery and the record). A live holder records its messages long before that, however long it
keeps them (countdowns, prefetch), so "unrecorded for ALIVE_SECONDS" means a dead or broken one.
Back on the queue within ALIVE_SECONDS plus one scan interval of the kill.

A hand-back gives the message a fresh delivery tag (``_HAND_BACK``, one atomic script), unlike
kombu's own restore: a holder that was only stalled (SIGSTOP, a frozen VM) and acknowledges its copy
later then removes nothing but its own, long-gone entry, never the new holder's. Its copy still
runs, so the message is delivered twice; the second delivery is a skipped run (``busy``, ``done``,
``not_due``, ``superseded``), never a second sync.

Times compare the scanning host's clock with the delivering worker's (kombu's ``unacked_index``
score, as its own visibility timeout does): hosts should keep their clocks within seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any, cast

import redis
from celery import Celery
from celery.signals import task_received, worker_ready
from kombu.utils.uuid import uuid

from worker import pending

log = logging.getLogger(__name__)
ALIVE_SECONDS = 30.0
REFRESH_SECONDS = 5.0
HELD = "datasync:held"  # delivery tag -> the worker holding it (a message restored by kombu and taken again moves)
# KEYS: unacked hash, unacked index, HELD, the queue lists to push on. ARGV: old tag, the entry as read, the new
# payload. Only if the entry is still the one read (not acknowledged, not handed back by another scan meanwhile).
_HAND_BACK = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('hdel', KEYS[3], ARGV[1])
for i = 4, #KEYS do redis.call('rpush', KEYS[i], ARGV[3]) end
return 1
"""
_heartbeats: dict[int, str] = {}  # this process's worker name, once its heartbeat thread runs


def alive_key(worker: str) -> str:
    return f"datasync:alive:{worker}"


def record(client: redis.Redis, worker: str, tag: str) -> None:
    """Note that ``worker`` holds the message ``tag``, and that it is alive (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.set(alive_key(worker), "1", px=int(ALIVE_SECONDS * 1000))
    pipe.hset(HELD, tag, worker)
    pipe.execute()


def refresh(client: redis.Redis, worker: str) -> None:
    """Keep ``worker`` alive: one write, whatever it and the others hold."""
    client.set(alive_key(worker), "1", px=int(ALIVE_SECONDS * 1000))


def hand_back_lost_messages(app: Celery) -> int:
    """Put back on their queues, under fresh tags, the unacknowledged messages no live worker holds; how many."""
    client = pending.redis_client()
    if client is None:
        return 0
    try:
        return _hand_back_lost(app, client)
    except Exception as exc:  # a broker outage must not stop the scan; the next one tries again
        log.warning("could not hand back lost messages: %s", exc)
        return 0


def _hand_back_lost(app: Celery, client: redis.Redis) -> int:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        qos = channel.qos
        delivered_before = time.time() - ALIVE_SECONDS
        index = client.zrangebyscore(qos.unacked_index_key, "-inf", delivered_before)
        settled = [_text(tag) for tag in cast(list[bytes], index)]
        if not settled:
            return 0
        recorded = client.hmget(HELD, settled)
        holders = {tag: _text(worker) if worker else None for tag, worker in zip(settled, recorded, strict=True)}
        alive = _alive(client, {worker for worker in holders.values() if worker})
        lost = {tag: worker for tag, worker in holders.items() if worker not in alive}
        handed = [tag for tag in lost if _hand_back(channel, client, tag)]
    if handed:
        gone = ", ".join(sorted({lost[tag] or "nobody (killed before recording it)" for tag in handed}))
        log.warning("%d unacknowledged message(s) back on the queue, held by %s", len(handed), gone)
    return len(handed)


def _alive(client: redis.Redis, workers: set[str]) -> set[str]:
    ordered = sorted(workers)
    pipe = client.pipeline(transaction=False)
    for worker in ordered:
        pipe.exists(alive_key(worker))
    return {worker for worker, there in zip(ordered, pipe.execute(), strict=True) if there}


def _hand_back(channel: Any, client: redis.Redis, tag: str) -> bool:
    """Push ``tag``'s message where kombu's restore would (its exchange's queues, by priority, to the head),
    as a new delivery; whether it was still there to push."""
    qos = channel.qos
    entry = client.hget(qos.unacked_key, tag)
    if entry is None:
        return False  # acknowledged since the index was read
    payload, exchange, routing_key = json.loads(entry)
    payload["properties"]["delivery_tag"] = uuid()
    payload["properties"].setdefault("delivery_info", {})["redelivered"] = True
    payload.setdefault("headers", {})["redelivered"] = True
    priority = channel._get_message_priority(payload, reverse=False)
    queues = [channel._q_for_pri(queue, priority) for queue in channel._lookup(exchange, routing_key)]
    keys = [qos.unacked_key, qos.unacked_index_key, HELD, *queues]
    return bool(queues) and bool(client.eval(_HAND_BACK, len(keys), *keys, tag, entry, json.dumps(payload)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _on_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    """In the worker's main process, as a message arrives and before its task runs anywhere."""
    client = pending.redis_client()
    if client is None or request is None:
        return
    worker = _keep_alive(client, sender)
    with contextlib.suppress(redis.RedisError):  # unrecorded, the scan hands it back after ALIVE_SECONDS
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
        threading.Thread(target=_beat, args=(client, name), name="datasync-alive", daemon=True).start()
    return _heartbeats[pid]


def _beat(client: redis.Redis, worker: str) -> None:
    pause = threading.Event()
    while True:
        try:
            refresh(client, worker)
        except redis.RedisError as exc:  # a broker outage: the messages are lost to it anyway
            log.warning("could not record that this worker is alive: %s", exc)
        pause.wait(REFRESH_SECONDS)


task_received.connect(_on_received)
worker_ready.connect(_on_ready)

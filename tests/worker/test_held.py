"""Held messages on a real Redis: a consumer killed with a message in hand, then the scan's hand-back."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import redis

from worker import held
from worker.settings import get_settings

pytestmark = pytest.mark.redis
QUEUE = "datasync"
# A consumer that takes one message off the queue (kombu's Redis transport moves it to ``unacked``),
# records it as held by its worker, and dies without acknowledging it: a worker killed with it in hand.
TAKE_AND_DIE = """
import os, signal, sys
from kombu import Connection
from worker import held, pending
with Connection(sys.argv[1]) as connection:
    message = connection.default_channel.basic_get(queue=sys.argv[2])
    held.record(pending.redis_client(), sys.argv[3], message.delivery_tag)
    print(message.delivery_tag, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def app(broker: redis.Redis) -> object:
    from worker.broker import celery_client

    return celery_client(get_settings(), str(get_settings().broker_url))


def queue_sync(app: object, key: str) -> str:
    return str(app.send_task("datasync.sync_dataset", kwargs={"key": key, "trigger": "manual"}).id)  # type: ignore[attr-defined]


def taken_by_a_killed_consumer(worker: str) -> str:
    url = str(get_settings().broker_url)
    done = subprocess.run(
        [sys.executable, "-c", TAKE_AND_DIE, url, QUEUE, worker],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DATASYNC_BROKER_URL": url, "PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.strip(), done.stderr
    return done.stdout.strip()


def queued_keys(broker: redis.Redis) -> list[str]:
    return [json.loads(base64.b64decode(json.loads(raw)["body"]))[1]["key"] for raw in broker.lrange(QUEUE, 0, -1)]


def test_a_dead_workers_unacknowledged_message_is_put_back_on_its_queue(broker: redis.Redis, app: object) -> None:
    queue_sync(app, "ethnic_category")
    tag = taken_by_a_killed_consumer("w1@host:1")
    assert broker.hexists("unacked", tag) and not broker.llen(QUEUE)
    broker.delete(held.alive_key("w1@host:1"))  # what ALIVE_SECONDS without a heartbeat does
    assert held.restore_dead_workers_messages(app) == 1  # type: ignore[arg-type]
    assert queued_keys(broker) == ["ethnic_category"]
    assert not broker.hlen("unacked") and not broker.zcard("unacked_index")
    assert not broker.hexists(held.HELD, tag)
    assert held.restore_dead_workers_messages(app) == 0  # type: ignore[arg-type]  # once only
    assert queued_keys(broker) == ["ethnic_category"]


def test_a_live_workers_messages_stay_where_they_are(broker: redis.Redis, app: object) -> None:
    queue_sync(app, "ethnic_category")
    tag = taken_by_a_killed_consumer("w1@host:1")  # its alive key still runs (ALIVE_SECONDS)
    assert 0 < broker.pttl(held.alive_key("w1@host:1")) <= held.ALIVE_SECONDS * 1000
    assert held.restore_dead_workers_messages(app) == 0  # type: ignore[arg-type]
    assert broker.hexists("unacked", tag) and not broker.llen(QUEUE)
    assert broker.hget(held.HELD, tag) == b"w1@host:1"


def test_a_heartbeat_keeps_its_worker_alive_and_forgets_acknowledged_messages(broker: redis.Redis) -> None:
    broker.hset("unacked", "still-held", "[]")
    held.record(broker, "w1@host:1", "still-held")
    held.record(broker, "w1@host:1", "acknowledged")
    held.record(broker, "w2@host:2", "another-workers")  # its own heartbeat judges it
    broker.pexpire(held.alive_key("w1@host:1"), 500)
    held.refresh(broker, "w1@host:1", "unacked")
    assert broker.pttl(held.alive_key("w1@host:1")) > 500
    assert sorted(broker.hkeys(held.HELD)) == [b"another-workers", b"still-held"]


def test_a_message_acknowledged_before_the_hand_back_is_not_queued_again(broker: redis.Redis, app: object) -> None:
    queue_sync(app, "ethnic_category")
    tag = taken_by_a_killed_consumer("w1@host:1")
    broker.hdel("unacked", tag)  # another holder finished and acknowledged it meanwhile
    broker.delete(held.alive_key("w1@host:1"))
    assert held.restore_dead_workers_messages(app) == 0  # type: ignore[arg-type]
    assert not broker.llen(QUEUE)
    assert not broker.hexists(held.HELD, tag)


def test_a_message_handed_back_and_taken_again_belongs_to_its_new_holder(broker: redis.Redis, app: object) -> None:
    """A pool process killed hands its message back (same tag); the live worker that takes it holds it now."""
    queue_sync(app, "ethnic_category")
    tag = taken_by_a_killed_consumer("w1@host:1")
    held.record(broker, "w2@host:2", tag)
    broker.delete(held.alive_key("w1@host:1"))
    assert held.restore_dead_workers_messages(app) == 0  # type: ignore[arg-type]
    assert broker.hexists("unacked", tag) and not broker.llen(QUEUE)
    assert broker.hget(held.HELD, tag) == b"w2@host:2"

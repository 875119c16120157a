"""Held messages on a real Redis, taken by real kombu consumers on the workers' transport: killed with a
message in hand (recorded or not), stalled and acknowledging late, and the scan's hand-back."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from typing import Any

import pytest
import redis

from worker import held
from worker.settings import get_settings

pytestmark = pytest.mark.redis
QUEUE = "datasync"
# A consumer on the workers' transport that takes one message off the queue (kombu moves it to ``unacked``),
# records it as held by its worker unless that is "-" (killed before the record), prints its tag, then either
# dies without acknowledging it (a worker killed with it in hand) or acknowledges it when told (a stalled one).
TAKE = """
import os, signal, sys
from kombu import Connection
from worker import held, pending
url, queue, worker, then = sys.argv[1:]
with Connection(url, transport="worker.transport:Transport") as connection:
    message = connection.default_channel.basic_get(queue=queue)
    if worker != "-":
        held.record(pending.redis_client(), worker, message.delivery_tag)
    print(message.delivery_tag, flush=True)
    if then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.readline()
    message.ack()
    print("acknowledged", flush=True)
"""


@pytest.fixture
def app(broker: redis.Redis) -> Any:
    from worker.broker import celery_client

    return celery_client(get_settings(), str(get_settings().broker_url))


def queue_sync(app: Any, key: str) -> str:
    return str(app.send_task("datasync.sync_dataset", kwargs={"key": key, "trigger": "manual"}).id)


def consumer(worker: str, then: str) -> subprocess.Popen[str]:
    url = str(get_settings().broker_url)
    return subprocess.Popen(
        [sys.executable, "-c", TAKE, url, QUEUE, worker, then],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"DATASYNC_BROKER_URL": url, "PATH": "/usr/bin:/bin"},
    )


def taken_by_a_killed_consumer(worker: str) -> str:
    """The delivery tag of the message a consumer took and died holding (``-``: before recording it)."""
    taker = consumer(worker, "die")
    out, err = taker.communicate(timeout=60)
    assert out.strip(), err
    return out.strip()


def delivered_long_ago(broker: redis.Redis, tag: str) -> None:
    """What ALIVE_SECONDS of waiting does to kombu's delivery time of ``tag``."""
    broker.zadd("unacked_index", {tag: time.time() - held.ALIVE_SECONDS - 1})


def holder_gone(broker: redis.Redis, worker: str) -> None:
    """What ALIVE_SECONDS without a heartbeat does to a worker's alive key."""
    broker.delete(held.alive_key(worker))


def queued(broker: redis.Redis) -> list[tuple[str, str]]:
    """(dataset key, delivery tag) of every message on the queue, head (next taken) first."""
    found = []
    for raw in reversed(broker.lrange(QUEUE, 0, -1)):
        payload = json.loads(raw)
        kwargs = json.loads(base64.b64decode(payload["body"]))[1]
        found.append((kwargs["key"], payload["properties"]["delivery_tag"]))
    return found


def test_a_dead_workers_message_is_handed_back_once_under_a_fresh_tag(broker: redis.Redis, app: Any) -> None:
    queue_sync(app, "ethnic_category")
    tag = taken_by_a_killed_consumer("w1@host:1")
    assert broker.hexists("unacked", tag) and not broker.llen(QUEUE)
    holder_gone(broker, "w1@host:1")
    delivered_long_ago(broker, tag)
    assert held.hand_back_lost_messages(app) == 1
    [(key, new_tag)] = queued(broker)
    assert key == "ethnic_category" and new_tag != tag
    assert json.loads(broker.lindex(QUEUE, 0))["headers"]["redelivered"] is True  # as kombu's restore marks it
    assert not broker.hlen("unacked") and not broker.zcard("unacked_index") and not broker.hlen(held.HELD)
    assert held.hand_back_lost_messages(app) == 0  # once only
    assert len(queued(broker)) == 1


def test_a_message_killed_before_its_holder_recorded_it_is_handed_back_once_it_has_settled(
    broker: redis.Redis, app: Any
) -> None:
    """Killed between kombu's delivery and the record: no holder to judge, so its age does."""
    queue_sync(app, "ethnic_category")
    tag = taken_by_a_killed_consumer("-")
    assert broker.hexists("unacked", tag) and not broker.hexists(held.HELD, tag)
    assert held.hand_back_lost_messages(app) == 0  # just delivered: its holder may be recording it right now
    delivered_long_ago(broker, tag)
    assert held.hand_back_lost_messages(app) == 1
    assert [key for key, _ in queued(broker)] == ["ethnic_category"]
    assert not broker.hlen("unacked")


def test_a_live_workers_messages_stay_where_they_are_however_long_it_keeps_them(broker: redis.Redis, app: Any) -> None:
    queue_sync(app, "ethnic_category")
    tag = taken_by_a_killed_consumer("w1@host:1")  # its alive key still runs (ALIVE_SECONDS)
    delivered_long_ago(broker, tag)  # a countdown message, kept for longer than ALIVE_SECONDS
    assert 0 < broker.pttl(held.alive_key("w1@host:1")) <= held.ALIVE_SECONDS * 1000
    assert held.hand_back_lost_messages(app) == 0
    assert broker.hexists("unacked", tag) and not broker.llen(QUEUE)
    assert broker.hget(held.HELD, tag) == b"w1@host:1"


def test_an_acknowledgement_forgets_its_holder_and_a_heartbeat_only_keeps_the_worker_alive(
    broker: redis.Redis, app: Any
) -> None:
    queue_sync(app, "ethnic_category")
    taker = consumer("w1@host:1", "ack")
    assert taker.stdout is not None and taker.stdin is not None
    tag = taker.stdout.readline().strip()
    assert broker.hget(held.HELD, tag) == b"w1@host:1"
    taker.stdin.write("\n")
    taker.stdin.flush()
    assert taker.stdout.readline().strip() == "acknowledged"
    taker.wait(60)
    assert not broker.hexists("unacked", tag) and not broker.hexists(held.HELD, tag)  # one transaction
    broker.pexpire(held.alive_key("w1@host:1"), 500)
    held.refresh(broker, "w1@host:1")
    assert broker.pttl(held.alive_key("w1@host:1")) > 500


def test_a_message_acknowledged_before_the_hand_back_is_not_queued_again(broker: redis.Redis, app: Any) -> None:
    queue_sync(app, "ethnic_category")
    tag = taken_by_a_killed_consumer("w1@host:1")
    delivered_long_ago(broker, tag)
    broker.hdel("unacked", tag)  # another holder finished and acknowledged it meanwhile
    holder_gone(broker, "w1@host:1")
    assert held.hand_back_lost_messages(app) == 0
    assert not broker.llen(QUEUE)


def test_a_message_restored_by_kombu_and_taken_again_belongs_to_its_new_holder(broker: redis.Redis, app: Any) -> None:
    """A pool process killed hands its message back (kombu: same tag); the live worker that takes it holds it now."""
    queue_sync(app, "ethnic_category")
    tag = taken_by_a_killed_consumer("w1@host:1")
    held.record(broker, "w2@host:2", tag)
    holder_gone(broker, "w1@host:1")
    delivered_long_ago(broker, tag)
    assert held.hand_back_lost_messages(app) == 0
    assert broker.hexists("unacked", tag) and not broker.llen(QUEUE)
    assert broker.hget(held.HELD, tag) == b"w2@host:2"


def test_a_stalled_holders_late_acknowledgement_leaves_the_new_holders_copy_alone(
    broker: redis.Redis, app: Any
) -> None:
    """The first holder stalls past ALIVE_SECONDS, its message is handed back and taken by another, which is
    killed after the first one wakes and acknowledges its copy: the message still comes back."""
    queue_sync(app, "ethnic_category")
    stalled = consumer("w1@host:1", "ack")
    assert stalled.stdout is not None and stalled.stdin is not None
    first_tag = stalled.stdout.readline().strip()
    holder_gone(broker, "w1@host:1")
    delivered_long_ago(broker, first_tag)
    assert held.hand_back_lost_messages(app) == 1
    second_tag = taken_by_a_killed_consumer("w2@host:2")
    assert second_tag != first_tag
    stalled.stdin.write("\n")  # it wakes, and acknowledges the copy it kept
    stalled.stdin.flush()
    assert stalled.stdout.readline().strip() == "acknowledged"
    stalled.wait(60)
    assert broker.hexists("unacked", second_tag)  # a no-op for the new delivery
    holder_gone(broker, "w2@host:2")
    delivered_long_ago(broker, second_tag)
    assert held.hand_back_lost_messages(app) == 1
    assert [key for key, _ in queued(broker)] == ["ethnic_category"]

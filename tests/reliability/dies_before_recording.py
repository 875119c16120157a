"""Loaded into a test worker with ``celery worker -I``: the worker SIGKILLs itself, main process and pool, as
the first sync message reaches it, after kombu has moved the message into ``unacked`` and before
``worker.held`` records who holds it (the one Redis round trip a real kill can fall into)."""

from __future__ import annotations

import json
import os
import signal

import redis

from worker import held

_record = held.record


def _die_before_recording_a_sync(client: redis.Redis, worker: str, tag: str) -> None:
    entry = client.hget("unacked", tag)
    if entry and json.loads(entry)[0]["headers"].get("task") == "datasync.sync_dataset":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    _record(client, worker, tag)


held.record = _die_before_recording_a_sync

"""An upstream that flaps (5xx, hangs, 429 + Retry-After, truncated bodies, lists that end early, pages cut mid-table):
every dataset converges, politely, and no partial list is ever stored."""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db import session_factory
from models.schema import Dataset
from tests.reliability.conftest import (
    assert_versions_consistent,
    make_fleet,
    max_attempt,
    runs_of,
    shipped_keys,
    wait_converged,
    wait_quiet,
)
from tests.servers import RedisServer
from tests.upstream import HOSTS, Scripted, Upstream

SEED = int(os.environ.get("FAULT_SEED", time.time()))  # replay a run: FAULT_SEED=<seed from its figures>
pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
FLAP_SECONDS = float(os.environ.get("FAULT_FLAP_SECONDS", "120"))
MAX_RETRIES = 5
RATE = 10


def ended_early(body: bytes, path: str) -> bytes:
    """An RCPCH answer that ends early yet is well-formed JSON with an honest length: a later page
    that is empty (count 0, no next), a first page whose ``next`` is gone, or a list answering []."""
    payload = json.loads(body)
    if isinstance(payload, list):
        return b"[]"
    if "page=" in path:
        return json.dumps({"count": 0, "next": None, "previous": payload["previous"], "results": []}).encode()
    return json.dumps({**payload, "next": None}).encode()


def cut_mid_table(page: bytes) -> bytes:
    """An NHS DD page as a server that stopped mid-table sends it, with an honest length: up to its middle row."""
    rows = [match.start() for match in re.finditer(rb"<tr[\s>]", page)]
    return page[: rows[len(rows) // 2]] if rows else page[: len(page) // 2]


class Flapping:
    """A fault for about 45 % of requests while on; the kinds a public website really produces."""

    def __init__(self, upstream: Upstream, seed: int) -> None:
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.on = True
        self.injected: Counter[str] = Counter()

    def __call__(self, path: str) -> Scripted | None:
        with self.lock:
            if not self.on:
                return None
            roll = self.rng.random()
        kind, fault = self._pick(roll, path)
        if fault is not None:
            with self.lock:
                self.injected[kind] += 1
        return fault

    def _pick(self, roll: float, path: str) -> tuple[str, Scripted | None]:
        if roll < 0.12:
            return "5xx", Scripted(status=self.rng.choice([500, 502, 503, 504]))
        if roll < 0.20:
            return "429", Scripted(status=429, headers={"Retry-After": "1"})
        if roll < 0.28:
            return "hang", Scripted(status=200, body=b"late", delay=6)  # beyond the 4 s request deadline
        if roll < 0.40:
            body = self.upstream.body_for(path) or b""
            truncated = {"Content-Length": str(len(body)), "Connection": "close"}
            return "truncated", Scripted(status=200, body=body[: len(body) // 2], headers=truncated)
        if roll < 0.50 and path.startswith("/api.rcpch.ac.uk/"):
            early = ended_early(self.upstream.body_for(path) or b"[]", path)
            return "ended_early", Scripted(status=200, body=early, headers={"Content-Type": "application/json"})
        if roll < 0.50:
            cut = cut_mid_table(self.upstream.body_for(path) or b"")
            return "cut_mid_table", Scripted(status=200, body=cut, headers={"Content-Type": "text/html; charset=utf-8"})
        return "none", None


def test_a_flapping_upstream_converges_within_bounds_and_never_above_the_rate(
    pg_url: str, redis_server: RedisServer, upstream: Upstream, tmp_path: Path, results: dict[str, Any]
) -> None:
    keys = shipped_keys(30)
    flapping = Flapping(upstream, SEED)
    upstream.fault = flapping
    upstream.latency = 0.05
    env = {"DATASYNC_FAILURE_PAUSE_SECONDS": "5", "DATASYNC_MAX_RETRIES": str(MAX_RETRIES)}
    fleet = make_fleet(pg_url, redis_server.url(), upstream, tmp_path, keys, **env)
    try:
        fleet.worker("w1")
        fleet.worker("w2")
        beat = fleet.beat(1)
        time.sleep(FLAP_SECONDS)  # the fault window itself, not a wait for an event
        with flapping.lock:
            flapping.on = False
        started = time.monotonic()
        wait_converged(pg_url, keys, fleet)
        wait_quiet(pg_url, fleet, [beat])
        converged_after = time.monotonic() - started
    finally:
        fleet.stop()
    runs = runs_of(pg_url)
    assert_versions_consistent(pg_url)
    with session_factory(pg_url)() as session:
        versions = {d.key: d.version for d in session.scalars(select(Dataset))}
    assert versions == dict.fromkeys(keys, 1)  # the lists never changed: a partial one stored would be version 2
    assert max_attempt(runs) <= MAX_RETRIES + 1
    peaks = {host: upstream.peak_per_second(host) for host in HOSTS}
    results.update(
        seed=SEED,
        flap_seconds=FLAP_SECONDS,
        faults_injected=dict(flapping.injected),
        failed_attempts=sum(r.status == "failed" for r in runs),
        failure_kinds=dict(Counter(r.error_kind for r in runs if r.status == "failed")),
        max_attempt=max_attempt(runs),
        seconds_to_converge_after_the_faults=round(converged_after, 1),
        upstream_requests=len(upstream.arrivals),
        peak_requests_in_any_second=peaks,
        limit_per_second=RATE,
    )
    assert sum(flapping.injected.values()) > 20  # the faults really happened
    assert flapping.injected["ended_early"] > 0 and flapping.injected["cut_mid_table"] > 0
    assert all(peak <= RATE for peak in peaks.values()), peaks

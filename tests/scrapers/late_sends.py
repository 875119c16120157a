"""Requests that a busy machine runs late between their throttle grant and their send, on purpose.

``LateAfterGrant`` wraps a real throttle: every third request granted sleeps ``delay`` seconds after
its grant, as a thread descheduled at that point would. At 2 requests/s (grants 0.55 s apart) a
0.9 s delay puts that request between the next two grants, so a throttle that spaces only its
grants lets the upstream see three requests within 0.55 s.

``python -m tests.scrapers.late_sends REDIS_URL REWRITES URL REQUESTS THREADS`` is one process of
the distributed case: it counts grants in Redis, so the pattern is one across processes, prints
``ready``, sends on a ``go`` line from stdin, then prints how many requests it ran late.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from scrapers.http import HttpClient, Throttle, UrlRewrites
from scrapers.throttle import HostLimit, HostLimits, RedisThrottle

RATE = 2.0
LIMITS = HostLimits(HostLimit(3, RATE))  # room for a late holder while the next ones are granted
LATE_DELAY = 0.9
HOST = "www.datadictionary.nhs.uk"


class LateAfterGrant:
    def __init__(self, throttle: Throttle, next_grant: Callable[[], int], delay: float = LATE_DELAY) -> None:
        self.inner, self.next_grant, self.delay = throttle, next_grant, delay
        self.late = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self.inner.slot(host):
            if self.next_grant() % 3 == 0:
                with self._lock:
                    self.late += 1
                time.sleep(self.delay)  # the injected fault: this thread runs late, nothing is awaited
            yield

    def sending(self, host: str) -> contextlib.AbstractContextManager[None]:
        return self.inner.sending(host)

    def wait_estimate(self, host: str) -> float:
        return self.inner.wait_estimate(host)


def counter() -> Callable[[], int]:
    """Grant numbers 0, 1, 2... within this process."""
    numbers, lock = itertools.count(), threading.Lock()

    def next_grant() -> int:
        with lock:
            return next(numbers)

    return next_grant


def fetch_all(throttle: Throttle, rewrites: str, url: str, requests: int, threads: int) -> None:
    client = HttpClient(user_agent="late-sends", rewrites=UrlRewrites(rewrites), throttle=throttle)
    with contextlib.closing(client), ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: client.get(url, allowed_hosts=frozenset({HOST})), range(requests)))


def main() -> None:
    redis_url, rewrites, url, requests, threads = sys.argv[1:6]
    shared = RedisThrottle(redis_url, LIMITS)
    throttle = LateAfterGrant(shared, lambda: int(shared.client.incr("test:late_sends:grants")) - 1)
    print("ready", flush=True)
    if sys.stdin.readline().strip() == "go":
        fetch_all(throttle, rewrites, url, int(requests), int(threads))
    print(throttle.late, flush=True)


if __name__ == "__main__":
    main()

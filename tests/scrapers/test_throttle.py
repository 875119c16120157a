"""Politeness per host: concurrency and rate limits, in one process and across processes (Redis)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from scrapers.errors import TransientError
from scrapers.throttle import HostLimit, HostLimits, LocalThrottle, RedisThrottle
from tests.servers import RedisServer


def measure(throttle, host: str, requests: int, hold: float, workers: int = 8) -> tuple[int, list[float]]:
    """Run requests through the throttle; return peak concurrency and start times."""
    lock = threading.Lock()
    in_flight = peak = 0
    starts: list[float] = []

    def one(_: int) -> None:
        nonlocal in_flight, peak
        with throttle.slot(host):
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
                starts.append(time.monotonic())
            time.sleep(hold)
            with lock:
                in_flight -= 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(requests)))
    return peak, sorted(starts)


def test_host_limits_parse_overrides() -> None:
    limits = HostLimits(HostLimit(2, 2.0), "api.rcpch.ac.uk=4:10, www.datadictionary.nhs.uk=1:0.5")
    assert limits.for_host("api.rcpch.ac.uk") == HostLimit(4, 10.0)
    assert limits.for_host("www.datadictionary.nhs.uk") == HostLimit(1, 0.5)
    assert limits.for_host("elsewhere.org") == HostLimit(2, 2.0)
    with pytest.raises(ValueError, match="host=concurrency:rate"):
        HostLimits(HostLimit(2, 2.0), "badspec")


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["local", "redis"])
def test_concurrency_is_capped_per_host(kind: str, redis_server: RedisServer) -> None:
    limits = HostLimits(HostLimit(2, 1000.0))
    throttle = LocalThrottle(limits) if kind == "local" else RedisThrottle(redis_server.url(), limits)
    peak, _ = measure(throttle, f"{kind}-concurrency.example", requests=12, hold=0.05)
    assert peak == 2


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["local", "redis"])
def test_request_starts_are_spaced_by_the_rate(kind: str, redis_server: RedisServer) -> None:
    limits = HostLimits(HostLimit(8, 20.0))
    throttle = LocalThrottle(limits) if kind == "local" else RedisThrottle(redis_server.url(), limits)
    _, starts = measure(throttle, f"{kind}-rate.example", requests=10, hold=0.0)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    # Slots are granted 55 ms apart (20/s plus the margin); a thread the busy machine runs late
    # shortens one observed gap and lengthens the next, so the span is the sharp test, the gaps a coarse one.
    assert starts[-1] - starts[0] >= 9 / 20.0
    assert min(gaps) >= 0.5 / 20.0  # unthrottled, eight threads would start together


@pytest.mark.redis
def test_redis_budget_is_shared_between_separate_throttles(redis_server: RedisServer) -> None:
    """Two RedisThrottle objects stand for two worker processes: they share one budget."""
    limits = HostLimits(HostLimit(1, 1000.0))
    first, second = RedisThrottle(redis_server.url(), limits), RedisThrottle(redis_server.url(), limits)
    lock = threading.Lock()
    in_flight = peak = 0

    def one(throttle: RedisThrottle) -> None:
        nonlocal in_flight, peak
        with throttle.slot("shared.example"):
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.05)
            with lock:
                in_flight -= 1

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, [first, second] * 4))
    assert peak == 1


@pytest.mark.redis
def test_waiting_too_long_for_a_slot_is_a_transient_error(redis_server: RedisServer) -> None:
    throttle = RedisThrottle(redis_server.url(), HostLimits(HostLimit(1, 1000.0)), wait_limit=0.3)
    with throttle.slot("busy.example"), pytest.raises(TransientError) as caught, throttle.slot("busy.example"):
        pass
    assert caught.value.kind == "throttled"
    with throttle.slot("busy.example"):  # released again once the holder is done
        pass


def test_an_unreachable_redis_is_a_transient_error_not_a_crash() -> None:
    from worker.embedded import free_port

    throttle = RedisThrottle(f"redis://127.0.0.1:{free_port()}/0", HostLimits(HostLimit(1, 10.0)))
    assert not throttle.reachable()
    with pytest.raises(TransientError) as caught, throttle.slot("nowhere.example"):
        pass
    assert caught.value.kind == "throttle_unavailable"


def test_throttle_for_falls_back_to_this_process_when_redis_is_down() -> None:
    from worker.context import throttle_for
    from worker.embedded import free_port
    from worker.settings import Settings

    down = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(throttle_for(down), LocalThrottle)


HOLD = """
import sys, time
from scrapers.throttle import HostLimit, HostLimits, RedisThrottle
throttle = RedisThrottle(sys.argv[1], HostLimits(HostLimit(1, 1000.0)), slot_ttl=1.0, send_ttl=3.0)
with getattr(throttle, sys.argv[2])("holder.example"):
    print("holding", flush=True)
    time.sleep(60)
"""


def hold(redis_server: RedisServer, what: str) -> subprocess.Popen[str]:
    """A process holding a slot (``slot``) or the mark of a request being written (``sending``)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, redis_server.url(), what], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


@pytest.mark.redis
def test_a_killed_holders_slot_is_free_again_within_its_ttl(redis_server: RedisServer) -> None:
    holder = hold(redis_server, "slot")
    try:
        waiting = RedisThrottle(redis_server.url(), HostLimits(HostLimit(1, 1000.0)), wait_limit=0.5)
        with pytest.raises(TransientError), waiting.slot("holder.example"):
            pass  # held by a live process past its 1 s TTL: renewed
        time.sleep(1.2)
        with pytest.raises(TransientError), waiting.slot("holder.example"):
            pass
    finally:
        holder.kill()
        holder.wait(10)
    patient = RedisThrottle(redis_server.url(), HostLimits(HostLimit(1, 1000.0)), wait_limit=5)
    started = time.monotonic()
    with patient.slot("holder.example"):
        assert time.monotonic() - started < 2.0  # the dead holder's slot ran out within its TTL


@pytest.mark.redis
def test_a_request_killed_while_being_written_holds_up_the_next_write_at_most_its_send_ttl(
    redis_server: RedisServer,
) -> None:
    holder = hold(redis_server, "sending")
    waiting = RedisThrottle(redis_server.url(), HostLimits(HostLimit(1, 1000.0)), wait_limit=0.3)
    try:
        with pytest.raises(TransientError) as caught, waiting.sending("holder.example"):
            pass  # one write at a time per host
        assert caught.value.kind == "throttled"
    finally:
        holder.kill()
        holder.wait(10)
    patient = RedisThrottle(redis_server.url(), HostLimits(HostLimit(1, 1000.0)), wait_limit=10)
    started = time.monotonic()
    with patient.sending("holder.example"):
        assert time.monotonic() - started < 4.0  # the dead writer's mark ran out within its 3 s TTL


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["local", "redis"])
def test_wait_estimate_says_when_a_host_has_no_room(kind: str, redis_server: RedisServer) -> None:
    limits = HostLimits(HostLimit(1, 2.0))
    throttle = LocalThrottle(limits) if kind == "local" else RedisThrottle(redis_server.url(), limits)
    host = f"{kind}-estimate.example"
    assert throttle.wait_estimate(host) == 0.0
    with throttle.slot(host):
        assert throttle.wait_estimate(host) == float("inf")  # every slot taken: no start in sight
    assert 0.3 < throttle.wait_estimate(host) <= 0.55  # free, but the next start is spaced 1.1/2 s on


@pytest.mark.parametrize("rate", [2.0, 5.0])
def test_no_one_second_window_at_the_upstream_sees_more_than_the_rate(rate: float) -> None:
    """Measured by the server's own arrival log, with more threads than slots and a new connection each."""
    from scrapers.http import HttpClient, UrlRewrites
    from tests.upstream import Upstream

    site = "https://www.datadictionary.nhs.uk"
    with Upstream() as upstream:
        throttle = LocalThrottle(HostLimits(HostLimit(3, rate)))
        clients = [
            HttpClient(user_agent="t", rewrites=UrlRewrites(upstream.rewrites()), throttle=throttle) for _ in range(6)
        ]
        url = f"{site}/data_elements/consultation_type.html"
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda c: [c.get(url, allowed_hosts=frozenset({"www.datadictionary.nhs.uk"}))], clients * 2))
        for client in clients:
            client.close()
        assert len(upstream.arrivals) == 12
        assert upstream.peak_per_second("www.datadictionary.nhs.uk") <= rate


LATE_URL = "https://www.datadictionary.nhs.uk/data_elements/consultation_type.html"


def test_requests_run_late_after_their_grant_never_crowd_the_upstream_within_a_process() -> None:
    """Every third request sleeps 0.9 s between grant and send; spacing grants alone let 3 in 0.55 s through."""
    from tests.scrapers import late_sends
    from tests.upstream import Upstream

    with Upstream() as upstream:
        throttle = late_sends.LateAfterGrant(LocalThrottle(late_sends.LIMITS), late_sends.counter())
        late_sends.fetch_all(throttle, upstream.rewrites(), LATE_URL, requests=9, threads=4)
        assert throttle.late == 3
        assert len(upstream.arrivals) == 9
        assert upstream.peak_per_second(late_sends.HOST) <= late_sends.RATE


@pytest.mark.redis
def test_requests_run_late_after_their_grant_never_crowd_the_upstream_across_processes(
    redis_server: RedisServer,
) -> None:
    """Two processes share the Redis budget; grants are counted across both, every third one runs late."""
    import redis

    from tests.scrapers import late_sends
    from tests.upstream import Upstream

    redis.Redis.from_url(redis_server.url()).delete("test:late_sends:grants")
    with Upstream() as upstream:
        command = [sys.executable, "-m", "tests.scrapers.late_sends", redis_server.url(), upstream.rewrites()]
        command += [LATE_URL, "5", "3"]
        processes = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in "ab"]
        try:
            for process in processes:
                assert process.stdout is not None and process.stdout.readline().strip() == "ready"
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            late = [int(process.communicate(timeout=120)[0]) for process in processes]
        finally:
            for process in processes:
                process.kill()
                process.wait(10)
        assert [process.returncode for process in processes] == [0, 0]
        assert sum(late) == 4  # grants 0, 3, 6 and 9 of 10
        assert len(upstream.arrivals) == 10
        assert upstream.peak_per_second(late_sends.HOST) <= late_sends.RATE

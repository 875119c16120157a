"""Issue 11's benchmark table: every figure beside its baseline, measured in one run on this machine.

    bash scripts/bench            # the full run (~20 min on 2 cores); rewrites benchmarks/RESULTS.md
    bash scripts/bench --quick    # a smoke run at tiny sizes (a minute or two)

Sections: the scale phases (full sync, unchanged re-sync, 5 % changed, forced, status) at N = 100,
1,000 and 10,000 on SQLite and PostgreSQL, for the in-process CLI path and for two Celery worker
processes on Redis; the mixed-host scenario against its busiest host's rate bound; ``--jobs 4``
against ``--jobs 1`` on a CPU-bound first sync; the NHS DD parser against a naive extraction
(``parse_bench``); and ``benchmarks/process_bench.py``'s start-up and memory rows.
Every server is real and local (tests/upstream.py, tests/servers.py); each figure is a median over
the repeats named beside it, with the machine's load average noted per section.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import cli_path, parse_bench, process_bench
from benchmarks.cli_path import SyncCommand
from benchmarks.source import (
    HEAVY_PAGE,
    NHS_HOST,
    RCPCH_HOST,
    SMALL_PAGE,
    SYNTHETIC_LIMITS,
    change_pages,
    empty_store,
    rewrites,
    serve_synthetic,
    write_mixed_catalogue,
    write_synthetic_catalogue,
)
from models.db import get_engine, migrate
from tests.upstream import Upstream
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
LATENCY = 0.1  # the mixed-host scenario's injected upstream latency, seconds
CHANGED_SHARE = 20  # every 20th dataset changes in the "5 % changed" phase


@dataclass(frozen=True)
class Size:
    """One catalogue size of the scale section: how often, on which stores and paths, which phases."""

    n: int
    repeats: int
    stores: tuple[str, ...] = ("sqlite", "postgresql")
    celery: bool = True
    every_phase: bool = True  # False: full sync, unchanged re-sync and status only


@dataclass(frozen=True)
class Plan:
    sizes: tuple[Size, ...]
    stores: tuple[str, ...] = ("sqlite", "postgresql")  # of the --jobs section
    mixed_repeats: int = 5
    mixed_nhs: int | None = None  # None: all 57 fixture pages
    mixed_rcpch: int | None = None  # None: all 7 lists
    jobs_datasets: int = 100
    jobs_repeats: int = 5
    parse_runs: int = 5
    parse_seconds: float = 1.0
    process_repeats: int = 5


# The full run keeps to ~20 min on an idle 2-core machine: 5 repeats at N = 100; one run at 1,000;
# at 10,000 one run of the three phases that show growth (SQLite, CLI), as a first sync alone costs
# N times the per-dataset store bookkeeping.
FULL = Plan(
    sizes=(
        Size(100, 5),
        Size(1000, 1, celery=False),
        Size(10_000, 1, stores=("sqlite",), celery=False, every_phase=False),
    )
)
QUICK = Plan(
    sizes=(Size(20, 1),),
    mixed_repeats=1,
    mixed_nhs=4,
    mixed_rcpch=2,
    jobs_datasets=12,
    jobs_repeats=1,
    parse_runs=5,
    parse_seconds=0.05,
    process_repeats=1,
)
SECTIONS = ("scale", "mixed", "jobs", "parse", "process")


@dataclass
class Results:
    scale: list[dict[str, Any]] = field(default_factory=list)
    rss: list[dict[str, Any]] = field(default_factory=list)
    mixed: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    parse: tuple[str, float] | None = None
    process: list[dict[str, Any]] | None = None
    loads: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


@contextlib.contextmanager
def noted(results: Results, section: str) -> Iterator[None]:
    """Note the load average before and after a section, and how long it took."""
    before, started = load(), time.monotonic()
    print(f"== {section} (load {before})", file=sys.stderr, flush=True)
    yield
    results.loads.append(f"| {section} | {before} | {load()} | {time.monotonic() - started:.0f} |")


@contextlib.contextmanager
def cli_process(env: dict[str, str]) -> Iterator[Callable[[object], Any]]:
    """A fresh process running the in-process CLI path (``benchmarks.cli_path``); yields its ``ask``."""
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    process = context.Process(target=cli_path.serve, args=(theirs, env))
    process.start()
    theirs.close()  # the child's end: once the child is gone, recv() ends instead of waiting forever

    def ask(command: object) -> Any:
        mine.send(command)
        try:
            return mine.recv()
        except EOFError:
            raise RuntimeError(f"the CLI path's process ended (exit code {process.exitcode})") from None

    try:
        yield ask
    finally:
        with contextlib.suppress(OSError):
            mine.send(None)
        process.join(60)
        if process.is_alive():
            process.kill()


def status_command(env: dict[str, str]) -> dict[str, Any]:
    """``datasync status --json`` as its own process: wall time and that process's peak RSS."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")} | env
    started = time.perf_counter()
    command = [sys.executable, "-m", "worker.cli", "status", "--json"]
    process = subprocess.Popen(command, env=clean, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, code, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(code)
    wall = time.perf_counter() - started
    if process.returncode:
        assert process.stderr is not None
        raise RuntimeError(f"datasync status failed: {process.stderr.read().decode()[-2000:]}")
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "statuses": {}}


class Bench:
    def __init__(self, plan: Plan, scratch: Path) -> None:
        self.plan = plan
        self.scratch = scratch
        self.results = Results()
        self._postgres: Any = None
        self._redis: Any = None
        self._stores = 0

    def close(self) -> None:
        if self._redis is not None:
            self._redis.stop()
        if self._postgres is not None:
            self._postgres.stop()

    # -- servers and stores

    def store_url(self, kind: str) -> str:
        self._stores += 1
        if kind == "sqlite":
            url = f"sqlite:///{self.scratch / f'store{self._stores}.db'}"
        else:
            if self._postgres is None:
                from tests.servers import PostgresServer

                self._postgres = PostgresServer(self.scratch / "postgres")
            url = str(self._postgres.new_database())
        migrate(url)
        return url

    def broker_url(self) -> str:
        """One Redis for the whole run; this process's Celery app is pointed at it once."""
        if self._redis is None:
            from tests.servers import RedisServer
            from worker.settings import get_settings

            self._redis = RedisServer(self.scratch / "redis")
            os.environ["DATASYNC_BROKER_URL"] = self._redis.url()
            get_settings.cache_clear()
        import redis

        redis.Redis.from_url(self._redis.url()).flushdb()  # no throttle state or messages from the last set
        return str(self._redis.url())

    def env(self, url: str, catalogue: Path, upstream: Upstream, lifted: bool = True) -> dict[str, str]:
        env = {"DATASYNC_DATABASE_URL": url, "DATASYNC_CATALOGUE": str(catalogue)}
        env["DATASYNC_URL_REWRITES"] = rewrites(upstream)
        if lifted:
            env["DATASYNC_HOST_LIMITS"] = SYNTHETIC_LIMITS
        return env

    # -- the scale phases

    def scale(self) -> None:
        for size in self.plan.sizes:
            catalogue = write_synthetic_catalogue(self.scratch / f"synthetic-{size.n}.toml", size.n)
            for store in size.stores:
                with noted(self.results, f"scale, {store}, CLI, N={size.n}"):
                    self.scale_cli(store, size, catalogue)
                if size.celery:
                    with noted(self.results, f"scale, {store}, Celery, N={size.n}"):
                        self.scale_celery(store, size, catalogue)

    def scale_cli(self, store: str, size: Size, catalogue: Path) -> None:
        samples: dict[str, list[dict[str, Any]]] = {}
        with Upstream() as upstream:
            serve_synthetic(upstream, size.n, SMALL_PAGE)
            url = self.store_url(store)
            env = self.env(url, catalogue, upstream)
            with cli_process(env) as ask:
                for repeat in range(size.repeats):
                    empty_store(url)
                    samples.setdefault("full sync (first)", []).append(ask(SyncCommand()))
                    samples.setdefault("unchanged re-sync (304)", []).append(ask(SyncCommand(force=True)))
                    if size.every_phase:
                        one_thread = ask(SyncCommand(jobs=1, force=True))
                        samples.setdefault("unchanged re-sync (304), --jobs 1", []).append(one_thread)
                        change_pages(upstream, changed(size.n, repeat), SMALL_PAGE, repeat + 1)
                        samples.setdefault("5 % changed", []).append(ask(SyncCommand(force=True)))
                        forced = ask(SyncCommand(force=True, refetch=True))
                        samples.setdefault("forced (--refetch)", []).append(forced)
                    samples.setdefault("status", []).append(status_command(env))
                peak = ask("peak")
        labels = {"store": store, "path": "CLI", "n": size.n}
        for phase, runs in samples.items():
            self.results.scale.append(summary(runs, **labels, phase=phase))
        self.results.rss.append(labels | {"process": "datasync sync", "mb": peak})
        status_peak = max(run["rss_mb"] for run in samples["status"])
        self.results.rss.append(labels | {"process": "datasync status", "mb": status_peak})
        get_engine(url).dispose()

    def scale_celery(self, store: str, size: Size, catalogue: Path) -> None:
        from benchmarks.celery_path import CeleryWorkers

        keys = [f"bench_{index}" for index in range(size.n)]
        samples: dict[str, list[dict[str, Any]]] = {}
        with Upstream() as upstream:
            serve_synthetic(upstream, size.n, SMALL_PAGE)
            url = self.store_url(store)
            env = self.env(url, catalogue, upstream) | {"DATASYNC_BROKER_URL": self.broker_url()}
            log_dir = self.scratch / f"celery-{store}-{size.n}"
            log_dir.mkdir()
            with CeleryWorkers(env, log_dir) as workers:
                for repeat in range(size.repeats):
                    empty_store(url)
                    samples.setdefault("full sync (first)", []).append(workers.resync(keys))
                    samples.setdefault("unchanged re-sync (304)", []).append(workers.resync(keys))
                    change_pages(upstream, changed(size.n, repeat), SMALL_PAGE, repeat + 1)
                    samples.setdefault("5 % changed", []).append(workers.resync(keys))
                    forced = workers.resync(keys, force=True, refetch=True)
                    samples.setdefault("forced (--refetch)", []).append(forced)
                peaks = workers.peak_rss_mb()
        for phase, runs in samples.items():
            self.results.scale.append(summary(runs, store=store, path="Celery ×2", n=size.n, phase=phase))
        for process, mb in peaks.items():
            self.results.rss.append({"store": store, "path": "Celery ×2", "n": size.n, "process": process, "mb": mb})
        get_engine(url).dispose()

    # -- the mixed-host scenario

    def mixed(self) -> None:
        catalogue = write_mixed_catalogue(self.scratch / "mixed.toml", self.plan.mixed_nhs, self.plan.mixed_rcpch)
        with noted(self.results, "mixed hosts, CLI"):
            self.mixed_cli(catalogue)
        with noted(self.results, "mixed hosts, Celery"):
            self.mixed_celery(catalogue)

    def mixed_cli(self, catalogue: Path) -> None:
        runs = []
        with Upstream() as upstream:
            upstream.latency = LATENCY
            url = self.store_url("sqlite")
            with cli_process(self.env(url, catalogue, upstream, lifted=False)) as ask:
                for _ in range(self.plan.mixed_repeats):
                    empty_store(url)
                    upstream.arrivals.clear()
                    runs.append(ask(SyncCommand()) | host_bound(upstream))
        self.results.mixed.append(mixed_summary(runs, "CLI (`sync --all`, --jobs 4), SQLite"))

    def mixed_celery(self, catalogue: Path) -> None:
        from benchmarks.celery_path import CeleryWorkers
        from worker.catalogue import load_catalogue

        keys = [entry.key for entry in load_catalogue(catalogue).entries]
        runs = []
        with Upstream() as upstream:
            upstream.latency = LATENCY
            url = self.store_url("postgresql")
            env = self.env(url, catalogue, upstream, lifted=False) | {"DATASYNC_BROKER_URL": self.broker_url()}
            log_dir = self.scratch / "celery-mixed"
            log_dir.mkdir()
            with CeleryWorkers(env, log_dir) as workers:
                for _ in range(self.plan.mixed_repeats):
                    empty_store(url)
                    upstream.arrivals.clear()
                    runs.append(workers.resync(keys) | host_bound(upstream))
        self.results.mixed.append(mixed_summary(runs, "Celery (2 `datasync worker`, `resync --all`), PostgreSQL"))

    # -- threads

    def jobs(self) -> None:
        size = self.plan.jobs_datasets
        catalogue = write_synthetic_catalogue(self.scratch / f"heavy-{size}.toml", size)
        for store in self.plan.stores:
            with noted(self.results, f"--jobs, {store}"):
                rates = self.jobs_rates(store, size, catalogue)
            row = {"store": store, "n": size, "repeats": self.plan.jobs_repeats}
            self.results.jobs.append(row | {"rate_1": rates[1], "rate_4": rates[4]})

    def jobs_rates(self, store: str, size: int, catalogue: Path) -> dict[int, float]:
        """Median first-sync throughput at --jobs 1 and --jobs 4, interleaved so load bursts hit both alike."""
        samples: dict[int, list[float]] = {1: [], 4: []}
        with Upstream() as upstream:
            serve_synthetic(upstream, size, HEAVY_PAGE)
            url = self.store_url(store)
            with cli_process(self.env(url, catalogue, upstream)) as ask:
                for _ in range(self.plan.jobs_repeats):
                    for jobs, walls in samples.items():
                        empty_store(url)
                        walls.append(ask(SyncCommand(jobs=jobs))["wall_s"])
        get_engine(url).dispose()
        return {jobs: size / statistics.median(walls) for jobs, walls in samples.items()}

    # -- parser and processes

    def parse(self) -> None:
        with noted(self.results, "parser (parse_bench, pinned to one core)"):
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:  # pinning to one core must not pin this process
                self.results.parse = pool.apply(parse_bench.figure, (self.plan.parse_runs, self.plan.parse_seconds))

    def process(self) -> None:
        with noted(self.results, "processes (process_bench)"):
            self.results.process = list(process_bench.measure(repeats=self.plan.process_repeats))


def changed(n: int, repeat: int) -> range:
    """The 5 % of datasets that change in this repeat (a different share each time)."""
    return range(repeat % CHANGED_SHARE, n, CHANGED_SHARE)


def summary(runs: list[dict[str, Any]], **labels: Any) -> dict[str, Any]:
    """Median wall time of the repeats, per-dataset costs, and SQL per dataset (where counted)."""
    wall = statistics.median(run["wall_s"] for run in runs)
    n = labels["n"]
    row = labels | {"repeats": len(runs), "wall_s": wall, "ms_per_dataset": wall / n * 1000, "per_s": n / wall}
    statuses: Counter[str] = Counter()
    for run in runs:
        statuses.update(run["statuses"])
    row["result"] = ", ".join(f"{count // len(runs)} {status}" for status, count in sorted(statuses.items()))
    for key in ("statements", "transactions", "writing_transactions", "write_locking_transactions"):
        if key in runs[0]:
            row[key] = statistics.median(run[key] for run in runs) / n
    return row


def host_bound(upstream: Upstream) -> dict[str, Any]:
    """Requests each host served in this run, and the per-second peak the upstream itself saw."""
    with upstream.lock:
        paths = [path for _, path in upstream.arrivals]
    hosts = {host: sum(path.startswith(f"/{host}/") for path in paths) for host in (NHS_HOST, RCPCH_HOST)}
    return {"requests": hosts, "peak_per_s": {host: upstream.peak_per_second(host) for host in hosts}}


def mixed_summary(runs: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """Wall time against the busiest host's bound: its requests at the configured and the effective rate."""
    rate, margin = default_setting("host_rate_per_second"), default_setting("host_rate_margin")
    busiest = max(runs[0]["requests"], key=lambda host: runs[0]["requests"][host])
    requests = statistics.median(run["requests"][busiest] for run in runs)
    wall = statistics.median(run["wall_s"] for run in runs)
    nominal, effective = requests / rate, requests * (1 + margin) / rate
    statuses: Counter[str] = Counter()
    for run in runs:
        statuses.update(run["statuses"])
    return {
        "path": path,
        "repeats": len(runs),
        "requests": {host: statistics.median(run["requests"][host] for run in runs) for host in runs[0]["requests"]},
        "peak_per_s": {host: max(run["peak_per_s"][host] for run in runs) for host in runs[0]["requests"]},
        "busiest": busiest,
        "wall_s": wall,
        "walls": [run["wall_s"] for run in runs],
        "nominal_s": nominal,
        "effective_s": effective,
        "margin": margin,
        "rate": rate,
        "result": ", ".join(f"{count // len(runs)} {status}" for status, count in sorted(statuses.items())),
    }


def default_setting(name: str) -> float:
    """A setting's shipped default (the runner gives its child processes no other)."""
    return float(Settings.model_fields[name].default)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run, not figures")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the results (RESULTS.md)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--max-n", type=int, help="leave out the scale sizes above this N (a machine under load)")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    left_out = [size.n for size in plan.sizes if args.max_n is not None and size.n > args.max_n]
    plan = replace(plan, sizes=tuple(size for size in plan.sizes if size.n not in left_out))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # servers and workers are stopped on the way out
    from benchmarks.report import render

    started, when, start_load = time.monotonic(), datetime.now(UTC), load()
    with tempfile.TemporaryDirectory(prefix="datasync-bench-") as scratch:
        bench = Bench(plan, Path(scratch))
        bench.results.notes += [f"N = {n:,}: left out of this run with `--max-n {args.max_n}`." for n in left_out]
        try:
            for name in sections:
                try:
                    getattr(bench, name)()
                except Exception as exc:  # the other sections' figures still count: record this one's failure
                    bench.results.notes.append(f"Section `{name}` FAILED in this run: {exc}")
                    print(f"section {name} failed: {exc}", file=sys.stderr, flush=True)
        finally:
            bench.close()
    machine = (
        f"{when:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{'--quick' if args.quick else 'full run'}, {time.monotonic() - started:.0f} s in all; "
        f"load average (1/5/15 min) at the start {start_load}"
    )
    text = render(bench.results, machine, sections)
    print(text)
    args.output.write_text(text, encoding="utf-8")
    print(f"\nwritten to {args.output}", file=sys.stderr)
    if any("FAILED" in note for note in bench.results.notes):
        raise SystemExit(1)

"""Issue 11's benchmark table: every figure beside its baseline, measured in one run on this machine.

    bash scripts/bench            # the default run (~40 min on an idle 2-core machine); rewrites RESULTS.md
    bash scripts/bench --full     # every phase 5 times at every N, 10,000 included (~2 h 45 min)
    bash scripts/bench --quick    # a smoke run at tiny sizes (a few minutes)

Sections: the scale phases (full sync, unchanged re-sync, 5 % changed, forced, status) at N = 100,
1,000 and 10,000 on SQLite and PostgreSQL, for the in-process CLI path and for two Celery worker
processes on Redis, SQL counted in both (``benchmarks/worker_sql.py`` in the workers); the default
run does every phase 5 times at 100 and 1,000 and, at 10,000, the phases that show growth as many
times as its time budget allows (``--budget-minutes``); the mixed-host scenario against its busiest
host's rate bound; ``--jobs 4`` against ``--jobs 1`` on a CPU-bound first sync; the NHS DD parser
against a naive extraction (``parse_bench``); and ``benchmarks/process_bench.py``'s start-up and
memory rows. Every server is real and local (tests/upstream.py, tests/servers.py); each figure is a
median over the repeats named beside it (one run is marked as one run), with the machine's load
average noted per run and per section.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import signal
import statistics
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
from benchmarks.capacity import parallel_capacity
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
ONE_THREAD = SyncCommand(jobs=1, force=True)


EVERY_PHASE = "every phase"
# The phases that show growth, for a short run: CLI full sync, unchanged re-sync and status; Celery the
# unchanged re-sync on the store the CLI path has just synced.
GROWTH_PHASES = "growth phases"
PATHS = ("CLI", "Celery")
PATH_LABELS = {"CLI": "CLI", "Celery": "Celery ×2"}
STORES = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Size:
    """One catalogue size of the scale section, run on both stores and both paths."""

    n: int
    repeats: int
    phases: str = EVERY_PHASE
    fit: bool = False  # True: as many repeats as fit the run's time budget (at least one, at most ``repeats``)


@dataclass(frozen=True)
class Plan:
    sizes: tuple[Size, ...]
    stores: tuple[str, ...] = STORES  # of the --jobs section
    mixed_repeats: int = 5
    mixed_nhs: int | None = None  # None: all 57 fixture pages
    mixed_rcpch: int | None = None  # None: all 7 lists
    # 100: the target's size; 1,000: the same run where the worker processes' fixed costs (forking, each
    # process's first dataset, ending them: ~30 ms a run) no longer weigh on a run of a few tenths of a second
    jobs_datasets: tuple[int, ...] = (100, 1000)
    jobs_repeats: int = 7  # more than the 5: the machine's parallel capacity swings between runs
    parse_runs: int = 5
    parse_seconds: float = 1.0
    process_repeats: int = 5


def full_plan(repeats: int) -> Plan:
    """Every phase at every N on both stores and paths, ``repeats`` times each (``--full`` = 5)."""
    return Plan(sizes=tuple(Size(n, repeats) for n in (100, 1000, 10_000)))


# The default run takes ~40 min on an idle 2-core machine: every phase 5 times at N = 100 and 1,000 on
# both stores and paths, then at 10,000 the phases that show growth on both stores and paths, 5 times
# (the medians of >= 5) unless a busy machine leaves the 50-min budget room for fewer: a repeat
# there costs ~6 min idle (N times each path's per-dataset cost).
DEFAULT = Plan(sizes=(Size(100, 5), Size(1000, 5), Size(10_000, 5, phases=GROWTH_PHASES, fit=True)))
QUICK = Plan(
    sizes=(Size(20, 1),),
    mixed_repeats=1,
    mixed_nhs=4,
    mixed_rcpch=2,
    jobs_datasets=(12,),
    jobs_repeats=1,
    parse_runs=5,
    parse_seconds=0.05,
    process_repeats=1,
)
BUDGET_MINUTES = 50.0

# Seconds per dataset for one repeat, by path and store, on the project's 2-core machine when nearly idle
# (load average ~1-2; 2026-12-01): the runtime estimate printed at the start, and the cost of a size the run
# has not measured yet. Once a size has run, the next size's cost is estimated from the phases it measured.
COST_PER_DATASET = {
    (EVERY_PHASE, "CLI", "sqlite"): 0.020,
    (EVERY_PHASE, "CLI", "postgresql"): 0.027,
    (EVERY_PHASE, "Celery", "sqlite"): 0.040,
    (EVERY_PHASE, "Celery", "postgresql"): 0.038,
    (GROWTH_PHASES, "CLI", "sqlite"): 0.0085,
    (GROWTH_PHASES, "CLI", "postgresql"): 0.0106,
    (GROWTH_PHASES, "Celery", "sqlite"): 0.0075,
    (GROWTH_PHASES, "Celery", "postgresql"): 0.0086,
}
JOBS_COST_PER_DATASET = 0.017  # seconds for one repeat of the --jobs section (both stores, --jobs 1 and 4)
COST_PER_REPEAT = {"CLI": 1.5, "Celery": 0.5}  # seconds: emptying the store, status's process start
COST_PER_SET = {"CLI": 3.0, "Celery": 10.0}  # seconds: a store, an upstream, the workers' start

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
    runtimes: list[dict[str, Any]] = field(default_factory=list)  # the scale section's cost per N
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
    """``datasync status --json`` as its own process: wall time and that process's peak RSS.

    Started from a small probe: a child of this large process would report this process's peak as its own.
    """
    clean = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")} | env
    sample = process_bench.run_once([sys.executable, "-m", "worker.cli", "status", "--json"], clean)
    return {"wall_s": sample.seconds, "rss_mb": sample.rss_mb, "statuses": {}}


class Bench:
    def __init__(self, plan: Plan, scratch: Path, budget_s: float = BUDGET_MINUTES * 60, reserve_s: float = 0) -> None:
        self.plan = plan
        self.scratch = scratch
        self.results = Results()
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s
        self.reserve_s = reserve_s  # what the sections after the scale one are expected to take
        self._postgres: Any = None
        self._redis: Any = None
        self._stores = 0
        self._changes = 0

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
            started, load_before = time.monotonic(), os.getloadavg()[0]
            repeats = self.repeats_of(size)
            expected = size_cost(size, repeats)
            catalogue = write_synthetic_catalogue(self.scratch / f"synthetic-{size.n}.toml", size.n)
            for store in STORES:
                with Upstream() as upstream:  # one upstream and store for both paths: see scale_celery
                    serve_synthetic(upstream, size.n, SMALL_PAGE)
                    url = self.store_url(store)
                    env = self.env(url, catalogue, upstream)
                    with noted(self.results, f"scale, {store}, CLI, N={size.n}, {repeats} × {size.phases}"):
                        self.scale_cli(store, size, repeats, upstream, env)
                    with noted(self.results, f"scale, {store}, Celery, N={size.n}, {repeats} × {size.phases}"):
                        self.scale_celery(store, size, repeats, upstream, env)
                get_engine(url).dispose()
            seconds, loads = time.monotonic() - started, (load_before, os.getloadavg()[0])
            runtime = {"n": size.n, "repeats": repeats, "phases": size.phases, "seconds": seconds, "loads": loads}
            self.results.runtimes.append(runtime | {"expected_s": expected})

    def repeats_of(self, size: Size) -> int:
        """The size's repeats; for a ``fit`` size as many as the time left allows, at least one."""
        if not size.fit:
            return size.repeats
        left = self.deadline - time.monotonic() - self.reserve_s
        one_repeat = sum(self.estimate(size.n, size.phases, path, store) for path in PATHS for store in STORES)
        setup = sum(COST_PER_SET[path] for path in PATHS for _ in STORES)
        repeats = max(1, min(size.repeats, int((left - setup) // one_repeat)))
        self.results.notes.append(
            f"N = {size.n:,}: {repeats} repeat(s) on each store and path, as many as fit the "
            f"{self.budget_s / 60:.0f}-min budget (a repeat of all four estimated at {one_repeat / 60:.1f} min "
            f"from this run's smaller N; {max(left, 0) / 60:.1f} min were left)"
            + (
                ", of the phases that show growth: the CLI's full sync, unchanged re-sync and status, and the "
                "Celery workers' unchanged re-sync of the store the CLI path has just synced. The other phases "
                "at this N (5 % changed, forced, the one-thread re-sync, the Celery full sync) run with `--full`."
                if size.phases == GROWTH_PHASES
                else "."
            )
        )
        return repeats

    def estimate(self, n: int, phases: str, path: str, store: str) -> float:
        """Seconds for one repeat at ``n``: from the largest N this run measured on the path and store, else
        from the recorded per-dataset cost."""
        label, wanted = PATH_LABELS[path], phases_of(path, phases)
        rows = [r for r in self.results.scale if r["path"] == label and r["store"] == store]
        if not rows:
            return repeat_cost(n, phases, path, store)
        largest: int = max(r["n"] for r in rows)
        cost: float = sum(r["ms_per_dataset"] / 1000 for r in rows if r["n"] == largest and r["phase"] in wanted)
        return n * cost + COST_PER_REPEAT[path]

    def scale_cli(self, store: str, size: Size, repeats: int, upstream: Upstream, env: dict[str, str]) -> None:
        samples: dict[str, list[dict[str, Any]]] = {}
        every = size.phases == EVERY_PHASE
        with cli_process(env) as ask:
            for _ in range(repeats):
                empty_store(env["DATASYNC_DATABASE_URL"])
                measured(samples, "full sync (first)", lambda: ask(SyncCommand()))
                measured(samples, "unchanged re-sync (304)", lambda: ask(SyncCommand(force=True)))
                if every:
                    measured(samples, "unchanged re-sync (304), --jobs 1", lambda: ask(ONE_THREAD))
                    self.change_pages(upstream, size.n)
                    measured(samples, "5 % changed", lambda: ask(SyncCommand(force=True)))
                    measured(samples, "forced (--refetch)", lambda: ask(SyncCommand(force=True, refetch=True)))
                measured(samples, "status", lambda: status_command(env))
            peak = ask("peak")
        labels = {"store": store, "path": PATH_LABELS["CLI"], "n": size.n}
        for phase, runs in samples.items():
            self.results.scale.append(summary(runs, **labels, phase=phase))
        self.results.rss.append(labels | {"process": "datasync sync", "mb": peak})
        status_peak = max(run["rss_mb"] for run in samples["status"])
        self.results.rss.append(labels | {"process": "datasync status", "mb": status_peak})

    def scale_celery(self, store: str, size: Size, repeats: int, upstream: Upstream, env: dict[str, str]) -> None:
        """Every phase from an emptied store per repeat; the short plan measures the unchanged re-sync only,
        on the store the CLI path has just synced (a Celery first sync at 10,000 costs minutes)."""
        from benchmarks.celery_path import CeleryWorkers

        keys = [f"bench_{index}" for index in range(size.n)]
        samples: dict[str, list[dict[str, Any]]] = {}
        log_dir = self.scratch / f"celery-{store}-{size.n}"
        log_dir.mkdir()
        with CeleryWorkers(env | {"DATASYNC_BROKER_URL": self.broker_url()}, log_dir) as workers:
            for _ in range(repeats):
                if size.phases == EVERY_PHASE:
                    empty_store(env["DATASYNC_DATABASE_URL"])
                    measured(samples, "full sync (first)", lambda: workers.resync(keys))
                measured(samples, "unchanged re-sync (304)", lambda: workers.resync(keys))
                if size.phases == EVERY_PHASE:
                    self.change_pages(upstream, size.n)
                    measured(samples, "5 % changed", lambda: workers.resync(keys))
                    measured(samples, "forced (--refetch)", lambda: workers.resync(keys, force=True, refetch=True))
            peaks = workers.peak_rss_mb()
        labels = {"store": store, "path": PATH_LABELS["Celery"], "n": size.n}
        for phase, runs in samples.items():
            self.results.scale.append(summary(runs, **labels, phase=phase))
        for process, mb in peaks.items():
            self.results.rss.append(labels | {"process": process, "mb": mb})

    def change_pages(self, upstream: Upstream, n: int) -> None:
        """Give 5 % of the pages a new label: a different 5 % and a new generation each time."""
        self._changes += 1
        change_pages(upstream, range(self._changes % CHANGED_SHARE, n, CHANGED_SHARE), SMALL_PAGE, self._changes)

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
        for size in self.plan.jobs_datasets:
            catalogue = write_synthetic_catalogue(self.scratch / f"heavy-{size}.toml", size)
            for store in self.plan.stores:
                with noted(self.results, f"--jobs, {store}, N={size:,}"):
                    rates = self.jobs_rates(store, size, catalogue)
                row = {"store": store, "n": size, "repeats": self.plan.jobs_repeats}
                self.results.jobs.append(row | rates)

    def jobs_rates(self, store: str, size: int, catalogue: Path) -> dict[str, Any]:
        """Median first-sync throughput at --jobs 1 and --jobs 4, interleaved so load bursts hit both alike,
        and the machine's parallel capacity sampled before each run (``benchmarks.capacity``)."""
        samples: dict[int, list[float]] = {1: [], 4: []}
        capacities: list[float] = []
        with Upstream() as upstream:
            serve_synthetic(upstream, size, HEAVY_PAGE)
            url = self.store_url(store)
            with cli_process(self.env(url, catalogue, upstream)) as ask:
                for _ in range(self.plan.jobs_repeats):
                    for jobs, walls in samples.items():
                        empty_store(url)
                        capacities.append(parallel_capacity())
                        walls.append(ask(SyncCommand(jobs=jobs))["wall_s"])
        get_engine(url).dispose()
        rates = {f"rate_{jobs}": size / statistics.median(walls) for jobs, walls in samples.items()}
        return rates | {"capacity": statistics.median(capacities), "capacities": capacities}

    # -- parser and processes

    def parse(self) -> None:
        with noted(self.results, "parser (parse_bench, pinned to one core)"):
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:  # pinning to one core must not pin this process
                self.results.parse = pool.apply(parse_bench.figure, (self.plan.parse_runs, self.plan.parse_seconds))

    def process(self) -> None:
        with noted(self.results, "processes (process_bench)"):
            self.results.process = list(process_bench.measure(repeats=self.plan.process_repeats))


def phases_of(path: str, phases: str) -> tuple[str, ...]:
    """The phases a path runs in a repeat of ``phases`` (status is a CLI command: it runs on the CLI path)."""
    growth = ("full sync (first)", "unchanged re-sync (304)")
    if path == "CLI":
        every = (*growth, "unchanged re-sync (304), --jobs 1", "5 % changed", "forced (--refetch)", "status")
        return every if phases == EVERY_PHASE else (*growth, "status")
    return (*growth, "5 % changed", "forced (--refetch)") if phases == EVERY_PHASE else growth[1:]


def measured(samples: dict[str, list[dict[str, Any]]], phase: str, run: Callable[[], dict[str, Any]]) -> None:
    """One run of a phase, with the machine's 1-minute load average as it started."""
    load_at_start = os.getloadavg()[0]
    samples.setdefault(phase, []).append(run() | {"load": load_at_start})


def summary(runs: list[dict[str, Any]], **labels: Any) -> dict[str, Any]:
    """Median wall time of the repeats (with their range and load), per-dataset costs, SQL per dataset."""
    walls = [run["wall_s"] for run in runs]
    wall, n = statistics.median(walls), labels["n"]
    row = labels | {"repeats": len(runs), "wall_s": wall, "ms_per_dataset": wall / n * 1000, "per_s": n / wall}
    loads = [run["load"] for run in runs]
    row |= {"wall_range": (min(walls), max(walls)), "load_range": (min(loads), max(loads))}
    for key in ("enqueue_s", "pool_processes"):
        if key in runs[0]:
            row[key] = statistics.median(run[key] for run in runs)
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


def repeat_cost(n: int, phases: str, path: str, store: str) -> float:
    """Seconds for one repeat at ``n``, from the recorded costs."""
    return n * COST_PER_DATASET[phases, path, store] + COST_PER_REPEAT[path]


def section_cost(plan: Plan, section: str) -> float:
    """Seconds the other sections take: the mixed hosts' run is bound by the busiest host's rate (~32 s)."""
    mixed_run = 33.0 if plan.mixed_nhs is None else 5.0
    costs = {
        "mixed": 2 * plan.mixed_repeats * mixed_run,
        "jobs": plan.jobs_repeats * sum(1.0 + JOBS_COST_PER_DATASET * n for n in plan.jobs_datasets),
        "parse": 5 + 4 * plan.parse_runs * plan.parse_seconds,
        "process": 12.0 * plan.process_repeats,
    }
    return costs.get(section, 0.0)


def size_cost(size: Size, repeats: int) -> float:
    """Seconds for a size on both stores and paths, from the recorded costs: setting up, then the repeats."""
    sets = [(path, store) for path in PATHS for store in STORES]
    return sum(COST_PER_SET[path] + repeats * repeat_cost(size.n, size.phases, path, store) for path, store in sets)


def expected_seconds(plan: Plan, sections: list[str], budget_s: float) -> float:
    """The run's expected wall time on the project's 2-core machine (recorded per-dataset costs)."""
    fixed = sum(section_cost(plan, name) for name in sections)
    if "scale" not in sections:
        return fixed
    total = fixed
    for size in plan.sizes:
        repeats = size.repeats
        if size.fit:  # what fits the budget after everything else, at least one
            left = budget_s - total - size_cost(size, 0)
            repeats = max(1, min(size.repeats, int(left // (size_cost(size, 1) - size_cost(size, 0)))))
        total += size_cost(size, repeats)
    return total


def describe(size: Size) -> str:
    repeats = f"up to {size.repeats} (as many as fit)" if size.fit else str(size.repeats)
    return f"{repeats} × {size.phases}"


def mode(args: argparse.Namespace) -> str:
    if args.quick:
        return "--quick"
    if args.full or args.repeats:
        return f"--repeats {args.repeats or 5} (full)"
    return f"default run ({args.budget_minutes:.0f}-min budget)"


def choose_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        return QUICK
    if args.full or args.repeats:
        return full_plan(args.repeats or 5)
    return DEFAULT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run, not figures")
    parser.add_argument("--full", action="store_true", help="every phase 5 times at every N (~2 h 45 min on 2 cores)")
    parser.add_argument("--repeats", type=int, help="every phase this many times at every N (--full = 5)")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=BUDGET_MINUTES,
        help="the default run's time budget: N = 10,000 gets as many repeats as fit (at least one)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the results (RESULTS.md)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--max-n", type=int, help="leave out the scale sizes above this N (a machine under load)")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    plan = choose_plan(args)
    left_out = [size.n for size in plan.sizes if args.max_n is not None and size.n > args.max_n]
    plan = replace(plan, sizes=tuple(size for size in plan.sizes if size.n not in left_out))
    budget_s = args.budget_minutes * 60
    expected = expected_seconds(plan, sections, budget_s)
    print(
        f"expected runtime ~{expected / 60:.0f} min on the project's 2-core machine (longer under load); "
        f"scale sizes: {', '.join(f'N={size.n:,} {describe(size)}' for size in plan.sizes)}",
        file=sys.stderr,
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # servers and workers are stopped on the way out
    from benchmarks.report import render

    started, when, start_load = time.monotonic(), datetime.now(UTC), load()
    with tempfile.TemporaryDirectory(prefix="datasync-bench-") as scratch:
        later = sections[sections.index("scale") + 1 :] if "scale" in sections else []
        bench = Bench(plan, Path(scratch), budget_s, reserve_s=sum(section_cost(plan, name) for name in later))
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
        f"{mode(args)}, {time.monotonic() - started:.0f} s in all (expected ~{expected:.0f} s); "
        f"load average (1/5/15 min) at the start {start_load}"
    )
    text = render(bench.results, machine, sections)
    print(text)
    args.output.write_text(text, encoding="utf-8")
    print(f"\nwritten to {args.output}", file=sys.stderr)
    if any("FAILED" in note for note in bench.results.notes):
        raise SystemExit(1)

"""Start-up time and peak memory of ``datasync`` processes, each beside its baseline (issue 11).

Every figure is the median of ``repeats`` fresh processes, measured side by side in one run with the
machine's load average noted: ``datasync --help`` against ``python -c pass`` and
``python -c "import sqlalchemy"``; ``datasync sync --all`` over the shipped catalogue served by the
local test upstream (politeness lifted with ``DATASYNC_HOST_LIMITS``, as README's local demo does), beside
its imports layer by layer (``SYNC_IMPORT_LAYERS``) and the run-time rest;
``datasync status`` and ``status --json`` over a catalogue matching its store, as a real store's datasets
come from its catalogue: 1,000 and 5,000 entries, each a dataset generated with the models in SQLite
(50-200 codes each), so the growth per 1,000 shows. Peak RSS is the child's ``ru_maxrss``, read after it
exits, by a small probe process (a child started from a large process inherits its high-water mark).

    python benchmarks/process_bench.py [--repeats 5] [--sections help,sync,status]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.db import migrate, session_factory  # noqa: E402
from models.schema import Dataset, DatasetVersion, SyncRun, SyncState  # noqa: E402
from models.types import utcnow  # noqa: E402
from scrapers.normalise import content_hash  # noqa: E402
from tests.upstream import HOSTS, Upstream  # noqa: E402

HELP_TARGET_S = 0.35
RSS_TARGET_MB = 60.0  # --help and sync --all alike (issue 11); the predecessor's --help takes 42 MB
STATUS_TARGET_MB = 120.0
STATUS_SIZES = (1000, 5000)
SECTIONS = ("help", "sync", "status")
# What ``datasync sync`` imports before it syncs anything: the floor under its peak, beside the figure.
SYNC_IMPORTS = (
    "import worker.cli, worker.context, worker.pipeline, worker.scheduling, scrapers.nhs_dd, scrapers.json_api, sqlite3"
)
# The same floor by layer, imported in this order in one interpreter (a module two layers share counts in the
# first). What production needs whatever the design comes first (HTTPS, the store's core, the parser, the CLI);
# the layers a leaner sync path could leave out come after them, so each one's figure is what leaving it out saves.
SYNC_IMPORT_LAYERS = (
    ("requests/urllib3/ssl", "import requests"),
    ("SQLAlchemy core/asyncio", "import sqlalchemy, sqlalchemy.engine, sqlalchemy.dialects.sqlite, sqlite3"),
    ("lxml", "import lxml.etree"),
    ("typer/rich", "import typer, rich.console, rich.table, rich.text"),
    ("pydantic", "import pydantic, pydantic.types"),
    ("SQLAlchemy ORM", "import sqlalchemy.orm"),
    ("datasync", SYNC_IMPORTS),
)
# Prints the resident set (KB) at the start, then after each layer's imports: one number a line.
LAYER_PROBE = """
import sys
def resident():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
print(resident())
for statement in sys.argv[1:]:
    exec(statement)
    print(resident())
"""
HOST = "www.datadictionary.nhs.uk"
BATCH = 500


@dataclass(frozen=True)
class Sample:
    """One process: wall seconds, CPU seconds (user + system: less swayed by a busy machine) and peak
    resident memory in MB."""

    seconds: float
    cpu_seconds: float
    rss_mb: float


def datasync() -> list[str]:
    """The installed entry point beside this interpreter, as an operator runs it."""
    script = Path(sys.executable).with_name("datasync")
    return [str(script)] if script.exists() else [sys.executable, "-m", "worker.cli"]


# Runs one command and prints its exit code, wall seconds and peak RSS (KB). A small process of its own,
# because a child's peak RSS counts the pages it shares with its parent between fork and exec: measured
# from this (large) benchmark process, even ``python -c pass`` would read as tens of MB.
PROBE = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=False).returncode
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(code, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
"""


def run_once(command: list[str], env: dict[str, str]) -> Sample:
    probe = subprocess.run([sys.executable, "-c", PROBE, *command], env=env, capture_output=True, text=True, check=True)
    code, seconds, cpu_seconds, peak_kb = probe.stdout.split()
    if int(code) != 0:  # a failed sync, or a status that could not read the store, measures nothing
        raise RuntimeError(f"{' '.join(command)} exited {code}: {probe.stderr[-500:]}")
    return Sample(float(seconds), float(cpu_seconds), int(peak_kb) / 1024)


def medians(command: list[str], env: dict[str, str], repeats: int, warm: Callable[[], None] | None = None) -> Sample:
    samples = []
    for _ in range(repeats):
        if warm:
            warm()
        samples.append(run_once(command, env))
    return Sample(
        *(statistics.median(getattr(s, name) for s in samples) for name in ("seconds", "cpu_seconds", "rss_mb"))
    )


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASYNC_")}
    return env | {"PYTHONPATH": str(ROOT)}


def row(measure: str, baseline: str, value: str, target: str, met: bool) -> dict[str, object]:
    return {"measure": measure, "baseline": baseline, "value": value, "target": target, "met": met}


def help_rows(repeats: int) -> list[dict[str, object]]:
    env = base_env()
    python = [sys.executable, "-c"]
    bare = medians([*python, "pass"], env, repeats)
    sqla = medians([*python, "import sqlalchemy"], env, repeats)
    helped = medians([*datasync(), "--help"], env, repeats)
    baseline = (
        f"`python -c pass` {bare.seconds:.2f} s ({bare.cpu_seconds:.2f} s CPU); "
        f"`import sqlalchemy` {sqla.seconds:.2f} s ({sqla.cpu_seconds:.2f} s CPU); predecessor 0.22 s"
    )
    return [
        row(
            "`datasync --help` wall time",
            baseline,
            f"{helped.seconds:.2f} s ({helped.cpu_seconds:.2f} s CPU)",
            f"≤ {HELP_TARGET_S} s",
            helped.seconds <= HELP_TARGET_S,
        ),
        row(
            "`datasync --help` peak RSS",
            f"`python -c pass` {bare.rss_mb:.0f} MB; `import sqlalchemy` {sqla.rss_mb:.0f} MB; predecessor 42 MB",
            f"{helped.rss_mb:.0f} MB",
            f"≤ {RSS_TARGET_MB:.0f} MB",
            helped.rss_mb <= RSS_TARGET_MB,
        ),
    ]


def sync_rows(repeats: int) -> list[dict[str, object]]:
    """Each run starts from an empty, migrated store, so every dataset is fetched, parsed and created
    (the one-off migration of a new store is not part of the figure)."""
    with tempfile.TemporaryDirectory() as scratch, Upstream() as upstream:
        store = Path(scratch) / "sync.db"
        env = base_env() | {
            "DATASYNC_DATABASE_URL": f"sqlite:///{store}",
            "DATASYNC_URL_REWRITES": upstream.rewrites(),
            "DATASYNC_HOST_LIMITS": ",".join(f"{host}=4:1000" for host in HOSTS),
        }

        def empty_store() -> None:
            store.unlink(missing_ok=True)
            subprocess.run([*datasync(), "migrate"], env=env, capture_output=True, check=True)

        sample = medians([*datasync(), "sync", "--all"], env, repeats, warm=empty_store)
    imports = run_once([sys.executable, "-c", SYNC_IMPORTS], env).rss_mb
    layers = "; ".join(f"{name} {mb:.1f}" for name, mb in import_layers(env))
    return [
        row(
            "`datasync sync --all` peak RSS (shipped catalogue, local upstream)",
            f"`import sqlalchemy` {sqlalchemy_rss():.0f} MB; the sync path's imports alone {imports:.0f} MB, "
            f"in MB by layer: {layers}; run-time {sample.rss_mb - imports:.1f}",
            f"{sample.rss_mb:.0f} MB ({sample.seconds:.1f} s)",
            f"≤ {RSS_TARGET_MB:.0f} MB",
            sample.rss_mb <= RSS_TARGET_MB,
        )
    ]


def import_layers(env: dict[str, str]) -> list[tuple[str, float]]:
    """MB each layer of the sync path's imports adds (``SYNC_IMPORT_LAYERS``), Python's own start first."""
    statements = [statement for _, statement in SYNC_IMPORT_LAYERS]
    probe = subprocess.run(
        [sys.executable, "-c", LAYER_PROBE, *statements], env=env, capture_output=True, text=True, check=True
    )
    resident = [int(kb) / 1024 for kb in probe.stdout.split()]
    names = ["Python", *(name for name, _ in SYNC_IMPORT_LAYERS)]
    added = [resident[0], *(after - before for before, after in itertools.pairwise(resident))]
    return list(zip(names, added, strict=True))


def sqlalchemy_rss() -> float:
    return run_once([sys.executable, "-c", "import sqlalchemy"], base_env()).rss_mb


def status_rows(repeats: int) -> list[dict[str, object]]:
    results: dict[tuple[str, int], Sample] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for size in STATUS_SIZES:
            root = Path(scratch) / str(size)
            root.mkdir()
            env = base_env() | build_status_store(root, size)
            for mode in ("table", "json"):
                command = [*datasync(), "status", *(["--json"] if mode == "json" else [])]
                results[(mode, size)] = medians(command, env, repeats)
    rows = []
    small, large = STATUS_SIZES
    for mode in ("table", "json"):
        few, many = results[(mode, small)], results[(mode, large)]
        per_thousand = (many.rss_mb - few.rss_mb) / ((large - small) / 1000)
        rows.append(
            row(
                f"`datasync status{' --json' if mode == 'json' else ''}` peak RSS, {large:,} catalogue entries "
                f"and {large:,} stored datasets",
                f"{small:,} entries and datasets: {few.rss_mb:.0f} MB; growth {per_thousand:.1f} MB per 1,000",
                f"{many.rss_mb:.0f} MB ({many.seconds:.1f} s)",
                f"≤ {STATUS_TARGET_MB:.0f} MB",
                many.rss_mb <= STATUS_TARGET_MB,
            )
        )
    return rows


def build_status_store(root: Path, size: int) -> dict[str, str]:
    """A SQLite store of ``size`` datasets shaped like production (50-200 codes each, one version and a
    few runs apiece, some failing, some held) and the catalogue they came from: one entry per dataset."""
    url = f"sqlite:///{root / 'status.db'}"
    migrate(url)
    generator = random.Random(size)
    keys = [f"element_{index:05d}" for index in range(size)]
    sessions = session_factory(url)
    for start in range(0, size, BATCH):
        with sessions.begin() as session:
            for index in range(start, min(start + BATCH, size)):
                add_dataset(session, keys[index], index, generator)
    catalogue = root / "catalogue.toml"
    catalogue.write_text("\n".join(catalogue_entry(key) for key in keys))
    return {"DATASYNC_DATABASE_URL": url, "DATASYNC_CATALOGUE": str(catalogue)}


def catalogue_entry(key: str) -> str:
    return (
        f'[[datasets]]\nkey = "{key}"\nname = "{key.replace("_", " ").title()}"\ncategory = "nhs_dd"\n'
        f'source = "nhs_dd"\nurl = "https://{HOST}/data_elements/{key}.html"\ntags = ["bench"]\n'
        "frequency_hours = 168\n"
    )


def add_dataset(session: Any, key: str, index: int, generator: random.Random) -> None:
    now = utcnow()
    options = {
        f"{code:03d}": f"Option {code} of {key}, as the source words it" for code in range(generator.randint(50, 200))
    }
    digest = content_hash(options)
    synced_at = now - timedelta(hours=generator.uniform(1, 400))
    session.add(
        Dataset(
            key=key,
            name=key.replace("_", " ").title(),
            description=f"NHS Data Dictionary - {key}",
            category="nhs_dd",
            source_type="scrape",
            tags=["bench"],
            options=options,
            reference_url=f"https://{HOST}/data_elements/{key}.html",
            last_synced_at=synced_at,
            last_scraped=synced_at,
            content_hash=digest,
        )
    )
    session.add(DatasetVersion(dataset_key=key, version=1, options=options, content_hash=digest, origin="sync"))
    failing = index % 97 == 0
    held = index % 89 == 0
    for attempt in runs_of(failing, held):
        session.add(
            SyncRun(
                dataset_key=key,
                trigger="schedule",
                started_at=synced_at,
                finished_at=synced_at,
                duration_seconds=0.2,
                options_before=len(options),
                options_after=len(options),
                **attempt,
            )
        )
    session.add(
        SyncState(
            dataset_key=key,
            etag=f'"{digest[:16]}"',
            last_success_at=synced_at,
            last_attempt_at=synced_at,
            last_status="failed" if failing else "held" if held else "unchanged",
            consecutive_failures=4 if failing else 0,
            held_options={**options, "999": "A code the source added"} if held else None,
            held_hash=digest if held else None,
            held_reason="adds 1 code, pending review" if held else None,
        )
    )


def runs_of(failing: bool, held: bool) -> Iterator[dict[str, Any]]:
    yield {"status": "created", "version_after": 1}
    yield {"status": "unchanged", "version_after": 1}
    if failing:
        yield {"status": "failed", "error_kind": "http_404", "error_message": "HTTP 404 Not Found"}
    if held:
        yield {"status": "held", "error_kind": "held", "error_message": "adds 1 code"}


def measure(repeats: int = 5, sections: tuple[str, ...] = SECTIONS) -> list[dict[str, object]]:
    """Every row of this benchmark (of ``sections``): measure, baseline, value, target, met."""
    load = os.getloadavg()
    section_rows = {"help": help_rows, "sync": sync_rows, "status": status_rows}
    rows = [r for name in sections for r in section_rows[name](repeats)]
    note = f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start, median of {repeats} runs"
    return [{**r, "baseline": f"{r['baseline']} ({note})"} for r in rows]


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| measure | baseline | value | target | met |", "|---|---|---:|---|---|"]
    lines += [
        f"| {r['measure']} | {r['baseline']} | {r['value']} | {r['target']} | {'yes' if r['met'] else 'no'} |"
        for r in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="processes per figure (median; at least 5 to record)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)"
    )
    args = parser.parse_args()
    sections = tuple(name.strip() for name in args.sections.split(",") if name.strip())
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    print(markdown(measure(args.repeats, sections)))


if __name__ == "__main__":
    main()

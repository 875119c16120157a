"""Sync throughput and memory at catalogue scale, against a real local upstream.

Generates N NHS-Data-Dictionary-style pages (K codes each, plus the usual navigation and Where
Used tables), serves them from the test upstream, and times the phases an operator cares about:
the first sync (every dataset created), a conditional re-sync (every page answers 304), a forced
re-sync (every body fetched and hashed, nothing written), and a status read. Prints a Markdown
table; results are recorded in benchmarks/RESULTS.md.

    python benchmarks/sync_bench.py --datasets 1000 --codes 50 [--store postgresql]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.db import migrate, session_factory  # noqa: E402
from scrapers.throttle import HostLimit, HostLimits, LocalThrottle  # noqa: E402
from tests.upstream import Upstream  # noqa: E402
from worker.catalogue import load_catalogue  # noqa: E402
from worker.context import SyncContext  # noqa: E402
from worker.pipeline import sync_dataset  # noqa: E402
from worker.settings import Settings  # noqa: E402
from worker.status import dataset_status  # noqa: E402

HOST = "www.datadictionary.nhs.uk"


def page(index: int, codes: int) -> str:
    rows = "".join(
        f'<tr class="strow"><td>{code:03d}</td><td><p>Option {code} of <a href="../classes/patient.html">PATIENT</a>'
        f"s list {index}</p></td></tr>"
        for code in range(1, codes + 1)
    )
    where_used = "".join(
        f'<tr><td>Data Set</td><td><a href="../ds/{n}.html">DATA SET {n}</a></td><td>References in</td></tr>'
        for n in range(60)
    )
    nav = "".join(f'<li><a href="../data_elements/e{n}.html">ELEMENT {n}</a></li>' for n in range(150))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>BENCH {index}</title></head><body>"
        f"<nav><ul>{nav}</ul></nav><main><h1 class='title topictitle1'>BENCH ELEMENT {index}</h1>"
        f"<h2 class='title sectiontitle'>National Codes</h2><table><colgroup><col style='width:20%'/>"
        f"<col style='width:80%'/></colgroup><thead><tr><th>Code</th><th>Description</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><h2 class='title sectiontitle'>Where Used</h2><table><thead><tr>"
        f"<th>Type</th><th>Link</th><th>How used</th></tr></thead><tbody>{where_used}</tbody></table>"
        "</main></body></html>"
    )


def build_fixtures(root: Path, datasets: int, codes: int) -> Path:
    pages = root / "upstream" / HOST / "data_elements"
    pages.mkdir(parents=True)
    entries = []
    for index in range(datasets):
        (pages / f"bench_{index}.html").write_text(page(index, codes))
        entries.append(
            f'[[datasets]]\nkey = "bench_{index}"\nname = "Bench {index}"\ncategory = "nhs_dd"\nsource = "nhs_dd"\n'
            f'url = "https://{HOST}/data_elements/bench_{index}.html"\ntags = ["bench"]\nfrequency_hours = 168\n'
        )
    catalogue = root / "catalogue.toml"
    catalogue.write_text("\n".join(entries))
    return catalogue


def timed_phase(name: str, entries, ctx: SyncContext, jobs: int, **options) -> dict:
    durations: list[float] = []

    def one(entry):
        started = time.perf_counter()
        outcome = sync_dataset(entry, ctx, **options)
        durations.append(time.perf_counter() - started)
        return outcome.status

    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        statuses = list(pool.map(one, entries))
    wall = time.perf_counter() - started
    return {
        "phase": name,
        "result": ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses))),
        "wall_s": wall,
        "per_s": len(entries) / wall,
        "p50_ms": statistics.median(durations) * 1000,
        "p95_ms": statistics.quantiles(durations, n=20)[18] * 1000,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--codes", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        catalogue = load_catalogue(build_fixtures(root, args.datasets, args.codes))
        url = store_url(args.store, root)
        migrate(url)
        with Upstream(root / "upstream") as upstream:
            settings = Settings(database_url=url, url_rewrites=upstream.rewrites())
            throttle = LocalThrottle(HostLimits(HostLimit(args.jobs, 10_000.0)))
            ctx = SyncContext.from_settings(settings, throttle)
            entries = list(catalogue.entries)
            rows = [
                timed_phase("first sync (create)", entries, ctx, args.jobs),
                timed_phase("re-sync, upstream answers 304", entries, ctx, args.jobs, trigger="manual"),
                timed_phase("forced re-sync (fetch + hash, no write)", entries, ctx, args.jobs, force=True),
            ]
            started = time.perf_counter()
            dataset_status(session_factory(url), catalogue, settings)
            status_ms = (time.perf_counter() - started) * 1000
    print(f"{args.datasets} datasets x {args.codes} codes, store {args.store}, {args.jobs} threads\n")
    print("| phase | result | wall s | datasets/s | p50 ms | p95 ms | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['phase']} | {row['result']} | {row['wall_s']:.1f} | {row['per_s']:.0f} | "
            f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['rss_mb']:.0f} |"
        )
    print(f"| status of all datasets | | {status_ms / 1000:.2f} | | | | |")


def store_url(kind: str, root: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{root / 'bench.db'}"
    from tests.servers import PostgresServer

    return PostgresServer(root / "pg").new_database()


if __name__ == "__main__":
    main()

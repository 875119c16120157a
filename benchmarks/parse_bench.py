"""NHS Data Dictionary parse rate on one core: naive bs4, the previous extractor and the lxml one, side by side.

Every fixture page (``tests/fixtures/upstream/www.datadictionary.nhs.uk/data_elements``) is held in
memory and read by three extractors in the same process, pinned to one core:

* naive: ``BeautifulSoup(html, "html.parser")`` and ``get_text()`` of every cell of every table
  (the baseline the target is set against; it gets several pages wrong, see tests/fixtures/README.md);
* previous: the BeautifulSoup-over-lxml extractor (kept as the oracle in tests/) + ``normalise``;
* current: ``scrapers.nhs_dd.parse_page`` (lxml's C tree) + ``normalise``, what a sync runs.

Each run reads every page (repeated until the run lasts at least ``--min-seconds``); the table gives
the median of ``--runs`` runs, their spread, and the machine's load average before and after. The
previous and current outputs are compared for every page first, so a fast wrong parser cannot pass.

    python benchmarks/parse_bench.py [--runs 7] [--min-seconds 1.0] [--record]

``--record`` replaces the "NHS DD parse rate" section of benchmarks/RESULTS.md and nothing else.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bs4 import BeautifulSoup  # noqa: E402

from scrapers.base import decode_marked, html_charset  # noqa: E402
from scrapers.http import Document  # noqa: E402
from scrapers.nhs_dd import parse_page  # noqa: E402
from scrapers.normalise import OptionList, normalise  # noqa: E402
from tests.scrapers.nhs_dd_oracle import oracle_rows  # noqa: E402

PAGES_DIR = ROOT / "tests" / "fixtures" / "upstream" / "www.datadictionary.nhs.uk" / "data_elements"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION_START = "<!-- parse_bench: start (written by benchmarks/parse_bench.py --record) -->"
SECTION_END = "<!-- parse_bench: end -->"
TARGET = 10.0


def naive(document: Document) -> list[list[str]]:
    soup = BeautifulSoup(document.body, "html.parser")
    return [
        [cell.get_text(" ", strip=True) for cell in row.find_all(["td", "th"])]
        for table in soup.find_all("table")
        for row in table.find_all("tr")
    ]


def previous(document: Document) -> OptionList:
    text = decode_marked(document, html_charset(document)).text
    return normalise(oracle_rows(text, document.url))


def current(document: Document) -> OptionList:
    return normalise(parse_page(document))


EXTRACTORS: dict[str, Callable[[Document], object]] = {
    "naive BeautifulSoup(html.parser) extraction": naive,
    "previous extractor (bs4 over lxml) + normalise": previous,
    "current extractor (lxml C tree) + normalise": current,
}


@dataclass
class Measured:
    name: str
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def load_pages() -> list[Document]:
    paths = sorted(PAGES_DIR.glob("*.html"))
    if not paths:
        raise SystemExit(f"no fixture pages in {PAGES_DIR}")
    return [
        Document(url=f"https://www.datadictionary.nhs.uk/data_elements/{p.name}", body=p.read_bytes()) for p in paths
    ]


def check_identical(pages: list[Document]) -> None:
    for page in pages:
        if previous(page) != current(page):
            raise SystemExit(f"{page.url}: the current extractor's output differs from the previous one's")


def one_run(extract: Callable[[Document], object], pages: list[Document], min_seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while True:
        for page in pages:
            extract(page)
        done += len(pages)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def measure(pages: list[Document], runs: int, min_seconds: float) -> list[Measured]:
    results = [Measured(name, []) for name in EXTRACTORS]
    for _ in range(runs):  # interleaved, so a burst of load on the machine hits every extractor alike
        for result in results:
            result.rates.append(one_run(EXTRACTORS[result.name], pages, min_seconds))
    return results


def pin_to_one_core() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core}"


def report(results: list[Measured], pages: list[Document], runs: int, pinned: str, loads: tuple[str, str]) -> str:
    baseline = results[0].median
    size = sum(len(p.body) for p in pages) / len(pages) / 1024
    lines = [
        f"{len(pages)} NHS DD fixture pages in memory (mean {size:.0f} KB), {runs} runs each, one process {pinned}; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Load average (1/5/15 min) before: {loads[0]}; after: {loads[1]}.",
        "",
        "| extractor | pages/s (median) | min-max | ms/page | × naive |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.name} | {result.median:,.0f} | {min(result.rates):,.0f}-{max(result.rates):,.0f} | "
            f"{1000 / result.median:.2f} | {result.median / baseline:.1f}× |"
        )
    speedup = results[-1].median / baseline
    verdict = "met" if speedup >= TARGET else "NOT met"
    lines += ["", f"Target ≥ {TARGET:.0f}× naive with identical output: {speedup:.1f}×, {verdict}."]
    return "\n".join(lines)


def section(table: str) -> str:
    """The RESULTS.md section holding ``table``, between the markers ``--record`` replaces."""
    return (
        f"{SECTION_START}\n## NHS DD parse rate (`python benchmarks/parse_bench.py --record`)\n\n"
        "Issue 11's parser target: parse + normalise of the NHS DD pages on one core at ≥ 10× a naive\n"
        "BeautifulSoup(`html.parser`) extraction, with output identical to the previous extractor's on every\n"
        "page (checked before timing, and by `tests/scrapers/test_nhs_dd_differential.py`). Absolute rates\n"
        "depend on the machine and its load; the ratio, measured in the same run, is the figure to compare.\n\n"
        f"{table}\n{SECTION_END}"
    )


def record(table: str) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END), re.DOTALL)
    text = (
        pattern.sub(lambda _: section(table), text)
        if pattern.search(text)
        else text.rstrip("\n") + "\n\n" + section(table)
    )
    RESULTS.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def figure(runs: int, min_seconds: float) -> tuple[str, float]:
    """Check, pin this process to one core, measure: the table and the current extractor's × naive."""
    pages = load_pages()
    check_identical(pages)
    pinned = pin_to_one_core()
    before = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    results = measure(pages, runs, min_seconds)
    after = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    return report(results, pages, runs, pinned, (before, after)), results[-1].median / results[0].median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per extractor (median reported; at least 5)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum length of one run")
    parser.add_argument("--record", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    table, _ = figure(args.runs, args.min_seconds)
    print(table)
    if args.record:
        record(table)
        print(f"\nrecorded in {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

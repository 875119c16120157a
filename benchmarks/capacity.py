"""How many cores the machine gives at a moment: the limit beside a ``--jobs 4`` ratio (issue 11).

A shared virtual machine's two cores are not always two. On the project's 2-core machine (2026-12-02),
two processes running the same pure-Python loop side by side ended, at some moments, in the time one
process took to run both loops (1.0×) and at others in half of it (2.0×), changing within seconds; the
guest's own counters show no steal time either way. ``--jobs 4`` cannot beat ``--jobs 1`` by more than the
cores it is given, so its ratio is read beside the capacity sampled next to each of its runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT_ITERATIONS = 300_000  # ~25-50 ms of pure-Python work on the project's machine


def _unit() -> None:
    table: dict[int, str] = {}
    for index in range(UNIT_ITERATIONS):
        table[index % 1000] = str(index)


def _forked(processes: int, units_each: int) -> float:
    """Seconds until ``processes`` forked processes have each run ``units_each`` units of work."""
    started = time.perf_counter()
    pids = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(units_each):
                    _unit()
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return time.perf_counter() - started


def measure() -> float:
    """Two processes' throughput over one process's on the same CPU-bound work, now: ~1.0 to ~2.0 on 2 cores.

    Both sides fork, so both pay the same start-up; one process runs two units, then two run one each.
    """
    alone = _forked(1, 2)
    side_by_side = _forked(2, 1)
    return alone / side_by_side


def parallel_capacity() -> float:
    """``measure`` in a small process of its own: forked from the benchmark's large one, each process would
    first copy its page tables, which the side with two processes would pay twice."""
    probe = subprocess.run(
        [sys.executable, "-m", "benchmarks.capacity"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return float(probe.stdout)


if __name__ == "__main__":
    print(f"{measure():.4f}")

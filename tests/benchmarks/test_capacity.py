"""The machine's parallel capacity probe: a ratio of two processes' throughput to one's, from its own process."""

from __future__ import annotations

import os
import statistics

from benchmarks import capacity


def test_the_capacity_is_a_throughput_ratio_no_larger_than_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    measured = statistics.median(capacity.parallel_capacity() for _ in range(3))  # one sample can be a burst
    # Two processes get at most twice one process's work done, and never much less than one's (one core
    # shared by both); a margin for the machine's own noise on either side.
    assert 0.6 < measured < min(cores, 2) + 0.4

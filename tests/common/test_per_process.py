"""One object per process: made once on first use, and made again in a forked child."""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import Connection

from common.per_process import PerProcess


def test_made_once_on_first_use_whatever_the_threads() -> None:
    one = PerProcess(object)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(one())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(seen) == 8 and all(value is seen[0] for value in seen)


def _answer_from_the_child(answer: Connection) -> None:
    answer.send(ours().made_in)


class _Made:
    """Which process made it: an ``id`` can be reused by the child's own object, a pid cannot."""

    def __init__(self) -> None:
        self.made_in = os.getpid()


ours = PerProcess(_Made)


def test_a_forked_child_makes_its_own() -> None:
    parents = ours()
    mine, theirs = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=_answer_from_the_child, args=(theirs,))
    child.start()
    assert mine.poll(30)
    assert mine.recv() == child.pid != parents.made_in
    child.join(30)
    assert ours() is parents and parents.made_in == os.getpid()  # the parent's is unchanged

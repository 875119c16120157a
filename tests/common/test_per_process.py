"""One object per process: made once on first use, and made again in a forked child."""

from __future__ import annotations

import multiprocessing
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


def _answer_from_the_child(parents: int, answer: Connection) -> None:
    answer.send(id(ours()) != parents)


ours = PerProcess(object)


def test_a_forked_child_makes_its_own() -> None:
    parents = id(ours())
    mine, theirs = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=_answer_from_the_child, args=(parents, theirs))
    child.start()
    assert mine.poll(30) and mine.recv() is True
    child.join(30)
    assert ours() is ours()  # the parent's is unchanged

"""One object per process, made on first use, for a service backed by a daemon thread.

Threads do not survive ``fork``: a forked child (a Celery pool process) that kept the parent's
object would hand work to a thread that does not exist in it, so the child makes its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """``make()`` called once per process, on first use; a forked child calls it again for itself."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget_the_parents)

    def __call__(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def _forget_the_parents(self) -> None:
        self._value, self._lock = None, threading.Lock()

"""SQL counted inside ``datasync worker``'s pool processes, for the benchmark's Celery path.

    python -m benchmarks.worker_sql worker --loglevel=INFO ...   # = ``datasync worker ...``, counting SQL

Production code is untouched: this module connects two Celery signal handlers, then runs the very
``datasync worker`` command (``worker.cli``). Each pool process counts what its store engine sends,
with ``tests/sqlcount.py`` (statements, transactions, writing transactions) and the CLI path's count of
BEGINs that take SQLite's write lock, and writes its running totals to ``<directory>/<pid>-<token>.json``
(``BENCH_WORKER_SQL_DIR``) when asked with SIGUSR2 and when it exits. Pool processes are recycled every
``max_tasks_per_child`` tasks, so the runner (``WorkerSql``) sums every process that ever ran: the
final totals of the ended ones and a fresh answer from each live one. A file is named by the pid and
a random token: pids are reused (pid_max is 32,768 here), and a new process must not overwrite an
ended one's totals.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

DIRECTORY_VARIABLE = "BENCH_WORKER_SQL_DIR"
REQUEST_FILE = "request"  # the number of the runner's latest request; an answer carries it
KINDS = ("statements", "transactions", "writing_transactions", "write_locking_transactions")
COUNTED = (*KINDS, "pool_processes")  # pool_processes: how many have started (recycling starts new ones)
ANSWER_SECONDS = 120.0

_counting = contextlib.ExitStack()
_totals: dict[str, Any] = {}


def _start_counting(**_: object) -> None:
    """In a fresh pool process: count its engine's SQL, answer SIGUSR2 with the totals so far."""
    from models.db import get_engine
    from tests.sqlcount import counting
    from worker.settings import get_settings

    engine = get_engine(get_settings().database_url)
    _totals["sql"] = _counting.enter_context(counting(engine))
    _totals["file"] = f"{os.getpid()}-{uuid.uuid4().hex[:12]}.json"  # a pid comes back: its file must not
    signal.signal(signal.SIGUSR2, lambda *_: _write(final=False))
    _write(final=False)  # the runner now knows this process, and that it answers


def _stop_counting(**_: object) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})  # the final totals are the last word
    _write(final=True)
    _counting.close()


def _write(final: bool) -> None:
    """This process's totals, written atomically (the runner may read at any moment)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})  # no answer inside an answer
    try:
        _write_totals(final)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _write_totals(final: bool) -> None:
    directory = Path(os.environ[DIRECTORY_VARIABLE])
    sql = _totals["sql"]
    sql.texts.clear()  # only the counts are wanted; the texts would grow with every task
    request = directory / REQUEST_FILE
    totals = {
        "pid": os.getpid(),
        "final": final,
        "answers": int(request.read_text()) if request.exists() else 0,
        "statements": sql.statements,
        "transactions": sql.transactions,
        "writing_transactions": sql.writing_transactions,
        "write_locking_transactions": sql.write_locking_transactions,
    }
    write_atomically(directory / _totals["file"], json.dumps(totals))


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


class WorkerSql:
    """The runner's side: the SQL every pool process of the workers has sent so far, summed."""

    def __init__(self, directory: Path, parents: list[int]) -> None:
        self.directory = directory
        self.parents = set(parents)  # the worker main processes: only their children are asked
        self.requests = 0

    def totals(self) -> Counter[str]:
        """Ask every live pool process for its totals, wait for the answers, and sum every process's."""
        self.requests += 1
        write_atomically(self.directory / REQUEST_FILE, str(self.requests))
        for answer in self._answers():
            if not answer["final"] and self._is_pool_process(answer["pid"]):
                os.kill(answer["pid"], signal.SIGUSR2)
        deadline = time.monotonic() + ANSWER_SECONDS
        while waiting := [answer["pid"] for answer in self._answers() if not self._answered(answer)]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker pool processes {waiting} did not report their SQL counts")
            time.sleep(0.05)
        total: Counter[str] = Counter()
        for answer in self._answers():
            total.update({kind: answer[kind] for kind in KINDS} | {"pool_processes": 1})
        return total

    def _answers(self) -> list[dict[str, Any]]:
        return [json.loads(path.read_text(encoding="utf-8")) for path in self.directory.glob("[0-9]*.json")]

    def _answered(self, answer: dict[str, Any]) -> bool:
        """Final (the process ended after its last task), answered this request, or gone without a word."""
        if answer["final"] or answer["answers"] >= self.requests:
            return True
        if not self._is_pool_process(answer["pid"]):
            raise RuntimeError(f"worker pool process {answer['pid']} ended without reporting its SQL counts")
        return False

    def _is_pool_process(self, pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return int(stat.rsplit(")", 1)[1].split()[1]) in self.parents  # field 4, after the command name


def main() -> None:
    from celery.signals import worker_process_init, worker_process_shutdown

    from worker.cli import main as datasync

    worker_process_init.connect(_start_counting, weak=False)
    worker_process_shutdown.connect(_stop_counting, weak=False)
    sys.argv[0] = "datasync"
    datasync()


if __name__ == "__main__":
    main()

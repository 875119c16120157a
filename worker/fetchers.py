"""Dataset syncs, or their fetch and parse, in worker processes, for a CPU-bound ``datasync sync --jobs N``.

Threads of one process take turns on the GIL: on a run whose hosts allow many requests per second,
``--jobs 4`` spends its time waiting for the lock that the HTTP client, the parser and the store's
SQL hold, and is no faster than ``--jobs 1``. ``Fetchers`` forks worker processes at the start of
such a run, and a thread that syncs a dataset hands work to a free process and waits:

- on SQLite, the whole sync (``pipeline.sync_here``: lease, fetch, parse, normalise, both store
  transactions), run under the thread's name as the lease owner: with the store's writes left in
  the parent, its transactions under SQLite's single writer were the whole run's bottleneck;
- on PostgreSQL, the fetch, parse and normalise (``pipeline.fetch_here``), the store work staying in
  the threads, whose transactions overlap on the server (a process's own store round trips would
  leave its core idle: measured slower).

The process works on its own HTTP session and store connections, so the store holds what the thread
would have written. The thread keeps what outlives the dataset: in-process retries, webhooks, progress.

Politeness stays the parent's: the process's throttle and host health are stand-ins that ask the
waiting thread, which enters the parent's own throttle slot, pacing cue and host health on its
behalf. So a host's limits hold across threads and processes exactly as they do for threads alone.
On SQLite the processes' writing transactions queue on one lock they share (``models.db``), so a
writer starts the moment the last commits instead of sleeping in SQLite's busy handler.
A dataset with credentials is synced in its thread: secrets never leave the parent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import queue
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from models.db import ForkedWriters, adopt_after_fork, engine_of
from models.types import utcnow
from scrapers import SOURCES
from scrapers.errors import SyncError, TransientError
from scrapers.http import HostHealth, NotModified, Validators, host_of
from scrapers.normalise import OptionList
from scrapers.throttle import HostLimits
from worker.catalogue import CatalogueEntry
from worker.context import SyncContext
from worker.outcome import SyncOutcome
from worker.pipeline import SyncOptions, end_left_sync, fetch_here, sync_here

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

Fetched = tuple[OptionList, Validators, int]  # what ``pipeline.fetch_here`` returns

# Below this many requests per second over all of a run's hosts, politeness, not the CPU, sets the
# run's pace (the shipped limits allow 2 per host): worker processes would cost memory for nothing.
CPU_BOUND_REQUESTS_PER_SECOND = 50.0
EXIT_SECONDS = 5.0  # a process asked to end gets this long before it is killed


@dataclass(frozen=True)
class _Refusal:
    """A ``SyncError`` carried across the pipe as data (exception pickling would not replay the
    keyword arguments its constructor takes)."""

    error_type: type[SyncError]
    kind: str
    message: str
    retry_after: float | None
    body: bytes

    @classmethod
    def of(cls, error: SyncError) -> _Refusal:
        return cls(type(error), error.kind, error.message, error.retry_after, error.body)

    def error(self) -> SyncError:
        return self.error_type(self.kind, self.message, retry_after=self.retry_after, body=self.body)


@dataclass(frozen=True)
class _Unchanged:
    url: str
    reason: str


@dataclass(frozen=True)
class _Raised:
    """Any other exception, pickled (a store that stopped answering fails the run as it would in the thread)."""

    pickled: bytes


@dataclass(frozen=True)
class _Bug:
    description: str


Answer = Fetched | SyncOutcome | _Refusal | _Unchanged | _Raised | _Bug
Answered = TypeVar("Answered", tuple[Any, ...], SyncOutcome)
Task = tuple[Any, ...]  # ("fetch", key, validators) or ("sync", key, owner, options)


class _Parent:
    """The process's end of the pipe: calls to the parent's throttle or host health, done by the
    thread that waits for this process. A message is a batch: what is only told waits for the next
    message, unless it must be known at once (a slot or a write's cue left)."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.told: list[tuple[Any, ...]] = []

    def call(self, *request: Any) -> Any:
        self.send(request)
        kind, value = self.pipe.recv()
        if kind == "raise":
            raise value.error()
        return value

    def tell(self, *request: Any, now: bool = False) -> None:
        """A call whose answer nobody waits for: done in order, before anything asked after it."""
        self.told.append(("tell", *request))
        if now:
            self.pipe.send(self.told)
            self.told = []

    def send(self, last: tuple[Any, ...]) -> None:
        self.pipe.send([*self.told, last])
        self.told = []


class _ParentThrottle:
    """The parent's throttle, seen from a worker process (``scrapers.http.Throttle``).

    A slot is asked for together with the host's sending cue for the request it is taken for, so a
    request waits for one answer of the parent, not two. The cue is then held from the grant instead
    of from the write: longer, never shorter, so the request is still alone on the wire and spaced from
    the last write's end (a new connection's set-up falls inside it too: once per process and host,
    the connection is kept). It is left the moment the write ends; one the request never used (it
    failed before writing) is left with the slot. Leaving is told at once, not asked: the parent's
    throttle notes a slot freed or a write ended a little after it happened, never before (so the
    spacing it keeps only grows). A process syncs one dataset at a time: one cue held unused at most.
    """

    def __init__(self, parent: _Parent) -> None:
        self.parent = parent
        self.cued: str | None = None  # the host whose sending cue this process holds, not yet used

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        self.parent.call("enter", ("throttle", "slot", host), ("throttle", "sending", host))
        self.cued = host
        try:
            yield
        finally:
            if self.cued is not None:
                self.cued = None
                self.parent.tell("exit")
            self.parent.tell("exit", now=True)

    @contextlib.contextmanager
    def sending(self, host: str) -> Iterator[None]:
        if self.cued == host:
            self.cued = None  # taken with the slot
        else:
            self.parent.call("enter", ("throttle", "sending", host))  # a second write in one slot
        try:
            yield
        finally:
            self.parent.tell("exit", now=True)

    def wait_estimate(self, host: str) -> float:
        return float(self.parent.call("call", "throttle", "wait_estimate", host))


class _ParentHealth(HostHealth):
    """The parent's host health, seen from a worker process: one count of timeouts per host for the run."""

    def __init__(self, parent: _Parent) -> None:
        super().__init__(0, 0.0)
        self.parent = parent

    def check(self, host: str, url: str) -> None:
        """Told: a refusal answers the slot the client asks for next (``_Errands``)."""
        self.parent.tell("call", "health", "check", host, url)

    def answered(self, host: str) -> None:
        self.parent.tell("call", "health", "answered", host)

    def timed_out(self, host: str) -> None:
        self.parent.tell("call", "health", "timed_out", host)


@dataclass(frozen=True)
class _Run:
    """What a worker process inherits at the fork: the run's datasets and context."""

    entries: dict[str, CatalogueEntry]
    ctx: SyncContext


def _serve(pipe: Connection, run: _Run) -> None:
    """A worker process's loop: one task at a time until None. Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = _Parent(pipe)
    http = run.ctx.http.with_politeness(_ParentThrottle(parent), _ParentHealth(parent))
    adopt_after_fork(engine_of(run.ctx.sessions))
    ctx = dataclasses.replace(run.ctx, http=http, fetchers=None)
    with contextlib.suppress(EOFError, OSError):  # the parent is gone: nothing is left to answer
        while (task := pipe.recv()) is not None:
            parent.send(("done", _answer(lambda: _perform(task, run.entries[task[1]], ctx))))


def _perform(task: Task, entry: CatalogueEntry, ctx: SyncContext) -> Fetched | SyncOutcome:
    if task[0] == "fetch":
        return fetch_here(entry, ctx.http, ctx.limits, task[2])
    return sync_here(entry, ctx, task[2], task[3])


def _answer(work: Callable[[], Fetched | SyncOutcome]) -> Answer:
    try:
        return work()
    except NotModified as unchanged:
        return _Unchanged(unchanged.url, unchanged.reason)
    except SyncError as error:
        return _Refusal.of(error)
    except Exception as error:  # the thread raises it as its own (an unreachable store) or as an internal error
        try:
            pickled = pickle.dumps(error)
            pickle.loads(pickled)  # some exceptions pickle but cannot be rebuilt from what they pickled
        except Exception:
            return _Bug(f"{type(error).__name__}: {error}")
        return _Raised(pickled)


class _Errands:
    """The parent's side of one dataset in a worker process: what the process asks of the throttle
    and host health, done in the waiting thread; every slot or cue still held is left at the end.

    A told errand that refuses (host health's ``check`` of a host given up) answers the process's
    next question, which is the slot it asks for next: the request is refused where it would have
    been, before any slot is taken, and the process waits for one answer per request less.
    """

    def __init__(self, targets: dict[str, Any]) -> None:
        self.targets = targets
        self.entered: list[contextlib.AbstractContextManager[None]] = []  # innermost last: a slot, its cue
        self.refusal: SyncError | None = None

    def until_done(self, pipe: Connection) -> Answer:
        while True:
            for request in pipe.recv():
                told = request[0] == "tell"
                kind, *details = request[1:] if told else request
                if kind == "done":
                    return _Refusal.of(self.refusal) if self.refusal else details[0]
                if told:
                    self.tell(kind, details)
                else:
                    pipe.send(self.ask(kind, details))

    def tell(self, kind: str, details: list[Any]) -> None:
        try:
            self.run(kind, details)
        except SyncError as error:
            self.refusal = error

    def ask(self, kind: str, details: list[Any]) -> tuple[str, Any]:
        refusal, self.refusal = self.refusal, None
        if refusal is None:
            try:
                return "ok", self.run(kind, details)
            except SyncError as error:
                refusal = error
        return "raise", _Refusal.of(refusal)

    def run(self, kind: str, details: list[Any]) -> Any:
        if kind == "exit":
            self.entered.pop().__exit__(None, None, None)
            return None
        if kind == "call":
            target, method, *arguments = details
            return getattr(self.targets[target], method)(*arguments)
        held = len(self.entered)  # "enter": each of ``details`` in order; if one fails, none of them is held
        try:
            for target, method, *arguments in details:
                entering = getattr(self.targets[target], method)(*arguments)
                entering.__enter__()
                self.entered.append(entering)
        except BaseException:
            while len(self.entered) > held:
                self.entered.pop().__exit__(None, None, None)
            raise
        return None

    def leave_all(self) -> None:
        """Leave what the process still holds (it died, or the thread stopped waiting), innermost first."""
        while self.entered:
            self.entered.pop().__exit__(None, None, None)


class _Died(Exception):
    """The process ended before it answered."""


class Fetchers:
    """Forked worker processes, one dataset each at a time, over a pipe of their own.

    Forked at the start of a run, before its threads exist, so a process inherits the imported
    sources and parsers and no lock a thread holds. A plain ``os.fork``: the after-fork hooks
    libraries register with ``multiprocessing`` (kombu closes its broker channels there, reading
    from the parent's socket) must not run in a process that only syncs; it ends with
    ``os._exit``, so nothing of the parent's (connections, atexit handlers) is finalised in it. A
    process that dies fails the dataset it was on (``fetcher_died``, transient, so it is retried:
    ``pipeline.end_left_sync``) and its place is taken by syncing in the calling thread.
    """

    def __init__(self, processes: int, entries: list[CatalogueEntry], ctx: SyncContext) -> None:
        from multiprocessing.connection import Pipe  # only a CPU-bound run pays for this import

        self._run = _Run({entry.key: entry for entry in entries}, ctx)
        self._targets = {"throttle": ctx.http.throttle, "health": ctx.http.host_health}
        self.whole_syncs = engine_of(ctx.sessions).dialect.name == "sqlite"
        self._writers = ForkedWriters() if self.whole_syncs else None
        self.pids: list[int] = []
        self._pipes: list[Connection] = []
        self._free: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        for _ in range(processes):
            mine, theirs = Pipe()
            self.pids.append(self._fork(theirs))
            theirs.close()
            self._pipes.append(mine)
            self._free.put(mine)

    def _fork(self, pipe: Connection) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            for others in self._pipes:  # the earlier processes' pipes are the parent's alone
                others.close()
            _serve(pipe, self._run)
            code = 0
        finally:
            os._exit(code)

    @staticmethod
    def offers(entry: CatalogueEntry) -> bool:
        """Whether ``entry`` may be synced in a worker process: not when it has credentials."""
        return not SOURCES[entry.source].credential_variables(entry)

    def takes(self, entry: CatalogueEntry) -> bool:
        """Whether this run's processes fetch ``entry`` (one of the datasets they were forked with)."""
        return self._run.entries.get(entry.key) == entry

    def syncs(self, entry: CatalogueEntry) -> bool:
        """Whether this run's processes sync ``entry`` whole (on SQLite), not only fetch it."""
        return self.whole_syncs and self.takes(entry)

    def sync(self, entry: CatalogueEntry, owner: str, options: SyncOptions) -> SyncOutcome:
        """``pipeline.sync_here`` in a free worker process, its lease held as ``owner`` (in this thread
        once none is left)."""
        ctx, since = self._run.ctx, utcnow()
        try:
            answer = self._handed(("sync", entry.key, owner, options))
        except _Died:
            return end_left_sync(entry, ctx, owner, since, _died(entry), options)
        if answer is None:
            return sync_here(entry, ctx, owner, options)
        return _result(answer, SyncOutcome)

    def fetch(self, entry: CatalogueEntry, validators: Validators | None) -> Fetched:
        """``pipeline.fetch_here`` in a free worker process (in this thread once none is left)."""
        ctx = self._run.ctx
        try:
            answer = self._handed(("fetch", entry.key, validators))
        except _Died:
            raise _died(entry) from None
        if answer is None:
            return fetch_here(entry, ctx.http, ctx.limits, validators)
        return _result(answer, tuple)

    def _handed(self, task: Task) -> Answer | None:
        """The answer of a free process to ``task``, doing its errands meanwhile; None when no process is left."""
        pipe = self._free.get()
        if pipe is None:
            self._free.put(None)
            return None
        errands = _Errands(self._targets)
        try:
            pipe.send(task)
            answer = errands.until_done(pipe)
        except (EOFError, OSError):
            self._free.put(None)
            raise _Died() from None
        except BaseException:
            self._free.put(None)  # the process may be mid-dataset: it is not handed out again
            raise
        finally:
            errands.leave_all()
        self._free.put(pipe)
        return answer

    def close(self) -> None:
        """Ask each process to end, and end any that does not."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        deadline = time.monotonic() + EXIT_SECONDS
        for pipe, pid in zip(self._pipes, self.pids, strict=True):
            if not _ended(pipe, deadline):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # already reaped
                os.waitpid(pid, 0)
            pipe.close()
        if self._writers is not None:
            self._writers.close()


def _died(entry: CatalogueEntry) -> TransientError:
    return TransientError("fetcher_died", f"{entry.url}: the process fetching this page ended unexpectedly")


def _ended(pipe: Connection, deadline: float) -> bool:
    """Whether a process asked to end has ended by ``deadline``: its end of the pipe closes as it exits."""
    try:
        while pipe.poll(max(0.0, deadline - time.monotonic())):
            pipe.recv_bytes()  # an answer nobody waits for any more
    except (EOFError, OSError):
        return True
    return False


def _result(answer: Answer, expected: type[Answered]) -> Answered:
    """The value a process answered, or the exception it raised, raised here."""
    if isinstance(answer, _Unchanged):
        raise NotModified(answer.url, answer.reason)
    if isinstance(answer, _Refusal):
        raise answer.error()
    if isinstance(answer, _Raised):
        raise pickle.loads(answer.pickled)
    if isinstance(answer, _Bug):
        raise RuntimeError(f"in a worker process: {answer.description}")
    if not isinstance(answer, expected):
        raise RuntimeError(f"in a worker process: {type(answer).__name__} answered, not {expected.__name__}")
    return answer


def fetchers_for(
    entries: Iterable[CatalogueEntry], jobs: int, host_limits: HostLimits, ctx: SyncContext
) -> Fetchers | None:
    """Worker processes when they pay: several jobs, several cores, and hosts that allow a CPU-bound pace."""
    cores = _usable_cores()
    if jobs < 2 or cores < 2:
        return None  # decided before the catalogue is walked: the usual ``--jobs 1`` run pays nothing
    taken = [entry for entry in entries if Fetchers.offers(entry)]
    allowed = sum(host_limits.for_host(host).per_second for host in {host_of(entry.url) for entry in taken})
    if len(taken) < 2 or allowed < CPU_BOUND_REQUESTS_PER_SECOND:
        return None
    return Fetchers(min(jobs, cores), taken, ctx)


def _usable_cores() -> int:
    """Cores this process may run on (its affinity, where the OS tells it: Linux), else all of them."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1

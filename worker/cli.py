"""The ``datasync`` command: one entry point for operators, the same functions the worker runs.

Celery, Redis, Alembic and the store are imported inside the commands that use them, so
``datasync --help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from models.diff import OptionsDiff
from worker.cli_catalogue import catalogue_app
from worker.cli_healthcheck import register as register_healthcheck
from worker.cli_monitoring import check_state_filter, print_json_array, print_status_table, register, report_system
from worker.cli_publish import catalogue_exit, register_publish, settings_exit
from worker.console import print_error, stderr, stdout, styled
from worker.outcome import SyncOutcome
from worker.settings import ConfigurationError, Settings, get_settings

if TYPE_CHECKING:
    from rich.text import Text

    from worker.catalogue import Catalogue, CatalogueEntry
    from worker.context import SyncContext
    from worker.scheduling import InProcessRetries, Work

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="Keep NHS Data Dictionary and NHS organisation option lists current in the dataset store.",
)

CatalogueOption = Annotated[
    Path | None, typer.Option("--catalogue", help="Catalogue TOML (default: DATASYNC_CATALOGUE or the shipped one).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Sync now even if fresh; conditional requests and guard rails still apply.")
]
RefetchOption = Annotated[
    bool, typer.Option("--refetch", help="Ignore stored validators: download in full even where a 304 would come.")
]
AcceptChangesOption = Annotated[
    bool,
    typer.Option("--accept-changes", help="Apply changes the guard rails would hold (or were rejected), unreviewed."),
]
STATUS_STYLE = {
    "created": "green",
    "updated": "cyan",
    "unchanged": "dim",
    "skipped": "yellow",
    "failed": "bold red",
    "held": "magenta",
    "would_create": "green",
    "would_update": "cyan",
    "would_hold": "magenta",
}
SUMMARY_ORDER = (
    "created",
    "updated",
    "unchanged",
    "skipped",
    "held",
    "would_create",
    "would_update",
    "would_hold",
    "failed",
)


def show_version(requested: bool) -> None:
    if requested:
        stdout().print(f"datasync {version('datasync')}")
        raise typer.Exit()


@app.callback()
def options(
    _version: Annotated[
        bool, typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Options that apply before any command."""


def main() -> None:
    """Every command, including those other modules register, fails on one line when a server is away."""
    try:
        settings = get_settings()
    except ConfigurationError as exc:
        raise settings_exit(exc) from exc
    os.environ.setdefault("PGCONNECT_TIMEOUT", str(max(2, math.ceil(settings.connect_timeout))))  # libpq's own
    try:
        app()
    except Exception as exc:
        message = unreachable_message(exc)
        if message is None:
            raise
        print_error(message)
        raise SystemExit(2) from None


class Unreachable(Exception):
    """A server a command needs does not answer."""

    def __init__(self, what: str, url: str, reason: object) -> None:
        super().__init__(f"cannot reach {what} at {safe_url(url)}: {one_line(reason, url)}")


def unreachable_message(exc: Exception) -> str | None:
    """One line naming the store or broker that did not answer, or None for any other error."""
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout
    from sqlalchemy.exc import InterfaceError
    from sqlalchemy.exc import OperationalError as StoreError

    settings = get_settings()
    if isinstance(exc, Unreachable):
        return str(exc)
    if isinstance(exc, StoreError | InterfaceError):
        return str(Unreachable("the store", settings.database_url, exc.orig or exc))
    if isinstance(exc, BrokerError | RedisConnectionError | RedisTimeout):
        return str(Unreachable("the broker", settings.broker_url or "", exc))
    return None


def one_line(reason: object, url: str) -> str:
    """A driver's (often multi-line) error as one line, without the URL's password."""
    from sqlalchemy.engine import make_url

    from scrapers.errors import redact

    password = make_url(url).password if url else None
    text = redact(" ".join(str(reason).split()), [str(password)] if password else [])
    return text if len(text) <= 300 else text[:297] + "..."


def check_reachable(what: str, url: str, timeout: float) -> None:
    """Fail at once on a Redis that does not answer, instead of Celery retrying it for ever."""
    import redis

    if not url.startswith(("redis://", "rediss://", "unix://")):
        return
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unreachable(what, url, exc) from exc
    finally:
        client.close()


def fail(message: str, code: int = 2) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def load_settings(catalogue: Path | None = None) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={"catalogue": catalogue}) if catalogue else settings


def open_catalogue(settings: Settings) -> Catalogue:
    from worker.catalogue import CatalogueError, load_catalogue

    try:
        return load_catalogue(settings.catalogue, settings.dataset_table().limits)
    except CatalogueError as exc:
        raise catalogue_exit(exc) from exc


def ensure_schema(settings: Settings) -> None:
    """Fresh SQLite stores are migrated on the spot; shared stores need an explicit ``migrate``."""
    from sqlalchemy.engine import make_url

    from models.db import is_current, migrate

    url = settings.database_url
    if not is_current(url):
        if make_url(url).get_backend_name() != "sqlite":
            raise fail(f"the store at {safe_url(url)} is not at the newest schema: run `datasync migrate` first")
        migrate(url, settings.dataset_table())
    check_store(settings)


def check_store(settings: Settings) -> None:
    """Refuse to start on a dataset table that cannot take what datasync writes (exit 2)."""
    from models.datasets import StoreMismatch
    from models.db import check_dataset_table

    try:
        check_dataset_table(settings.database_url, settings.dataset_table())
    except StoreMismatch as exc:
        raise fail(str(exc)) from exc


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command("migrate")
def migrate_command() -> None:
    """Create or upgrade the store's tables (safe to run any number of times)."""
    from models.db import migrate

    settings = get_settings()
    migrate(settings.database_url, settings.dataset_table())
    check_store(settings)
    stdout().print(f"store at {safe_url(settings.database_url)} is at the newest schema")


@app.command()
def sync(
    keys: Annotated[list[str] | None, typer.Argument(help="Dataset keys (default: every enabled dataset).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every enabled dataset in the catalogue.")] = False,
    category: Annotated[str | None, typer.Option(help="Only datasets of this category.")] = None,
    force: ForceOption = False,
    refetch: RefetchOption = False,
    accept_changes: AcceptChangesOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")] = False,
    jobs: Annotated[int, typer.Option(min=1, max=32, help="Datasets synced in parallel.")] = 4,
    catalogue: CatalogueOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sync datasets now, in this process (no broker needed). Exit 1 if any failed."""
    from worker.context import SyncContext, throttle_for
    from worker.malloc import limit_malloc_arenas
    from worker.pipeline import preview_dataset, sync_dataset
    from worker.scheduling import InProcessRetries

    limit_malloc_arenas()  # before the job threads start
    settings = load_settings(catalogue)
    entries = select_entries(open_catalogue(settings), keys, all_, category)
    ensure_schema(settings)
    ctx = SyncContext.from_settings(settings, throttle_for(settings))
    retries = InProcessRetries(ctx)
    try:
        if dry_run:
            outcomes = run_all(entries, jobs, ctx, lambda entry, _: preview_dataset(entry, ctx))
        else:
            outcomes = run_all(
                entries,
                jobs,
                ctx,
                lambda entry, attempt: sync_dataset(
                    entry,
                    ctx,
                    trigger="cli",
                    force=force,
                    refetch=refetch,
                    accept_changes=accept_changes,
                    **retries.of(attempt),
                ),
                retries,
            )
    finally:
        ctx.close()
    if as_json:
        print_json_array(outcome.to_json() for outcome in outcomes)
    else:
        print_outcomes(outcomes, dry_run)
    if any(outcome.failed for outcome in outcomes):
        raise typer.Exit(1)


def select_entries(
    catalogue: Catalogue, keys: list[str] | None, all_: bool, category: str | None
) -> list[CatalogueEntry]:
    from worker.catalogue import CatalogueError

    if keys and all_:
        raise fail("give dataset keys or --all, not both")
    try:
        entries = catalogue.select(keys or None, category)
    except CatalogueError as exc:
        raise catalogue_exit(exc) from exc
    if not entries:
        raise fail(f"no datasets selected (category {category!r})" if category else "no datasets selected")
    return entries


def run_all(
    entries: list[CatalogueEntry], jobs: int, ctx: SyncContext, work: Work, retries: InProcessRetries | None = None
) -> list[SyncOutcome]:
    """Run ``work`` per host (``worker.scheduling``), reporting progress; results in catalogue order."""
    from worker.scheduling import run_per_host

    with progress_reporter(len(entries)) as report, failures_reported_once():
        return run_per_host(entries, jobs, ctx, work, report, retries)


@contextlib.contextmanager
def progress_reporter(total: int) -> Iterator[Callable[[SyncOutcome], None]]:
    """Progress on stderr: a bar on a terminal; elsewhere (logs, CI, cron) one line per finished dataset.

    The lines name the result only: errors and warnings are printed once, with the results.
    Datasets skipped as fresh are only counted, so a run with nothing due stays quiet.
    """
    if stderr().is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=stderr(), transient=True) as progress:
            task = progress.add_task("syncing", total=total)
            yield lambda outcome: progress.update(task, advance=1, description=f"{outcome.key}: {outcome.status}")
        return
    finished = itertools.count(1)

    def line(outcome: SyncOutcome) -> None:
        done = next(finished)
        if not skipped_as_fresh(outcome):
            stderr().print(f"[{done}/{total}] {progress_note(outcome)}")

    yield line


def progress_note(outcome: SyncOutcome) -> str:
    note = f"{outcome.key}: {outcome.status}"
    if outcome.error_kind:
        note += f" ({outcome.error_kind})"
    if outcome.version is not None and not outcome.failed:
        note += f", version {outcome.version}, {_text(outcome.options)} options"
    return note


@contextlib.contextmanager
def failures_reported_once() -> Iterator[None]:
    """The pipeline logs each failure for the workers' logs; here its outcome reports it instead."""
    logger = logging.getLogger("worker.pipeline")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def skipped_as_fresh(outcome: SyncOutcome) -> bool:
    return outcome.status == "skipped" and outcome.error_kind == "fresh"


def print_outcomes(outcomes: list[SyncOutcome], dry_run: bool) -> None:
    """A table of what happened, then each error and warning once, then the counts on one line."""
    shown = [outcome for outcome in outcomes if not skipped_as_fresh(outcome)]
    if shown:
        print_table(shown, dry_run)
    for outcome in shown:
        for note in ([outcome.error] if outcome.error else []) + list(outcome.warnings):
            stdout().print(f"{outcome.key}: {note}", soft_wrap=True)
        if dry_run:
            print_changes(outcome.key, outcome.diff)
    tally = {status: sum(o.status == status for o in outcomes) for status in SUMMARY_ORDER}
    summary = "  ".join(f"{status}: {count}" for status, count in tally.items() if count or status == "failed")
    if fresh := len(outcomes) - len(shown):
        summary += f"  ({fresh} fresh: synced within their frequency; --force syncs anyway)"
    stdout().print(summary)


def print_table(outcomes: list[SyncOutcome], dry_run: bool) -> None:
    from rich.table import Table

    table = Table(title="dry run: nothing was written" if dry_run else None)
    for column in ("dataset", "result", "version", "options", "+added", "-removed", "~relabelled"):
        table.add_column(column, justify="left" if column in ("dataset", "result") else "right")
    for outcome in outcomes:
        counts = outcome.diff.counts()
        table.add_row(
            outcome.key,
            status_text(outcome.status),
            _text(outcome.version),
            _text(outcome.options),
            *(str(counts[name] or "") for name in ("added", "removed", "relabelled")),
        )
    stdout().print(table)


def status_text(status: str) -> Text:
    return styled(status, STATUS_STYLE.get(status, ""))


def print_changes(key: str, diff: OptionsDiff, limit: int = 25) -> None:
    lines = (
        [f"  + {code}: {label}" for code, label in diff.added.items()]
        + [f"  - {code}: {label}" for code, label in diff.removed.items()]
        + [f"  ~ {code}: {old} -> {new}" for code, (old, new) in diff.relabelled.items()]
    )
    if lines:
        stdout().print(f"{key}:")
        for line in lines[:limit]:
            stdout().print(line)
        if len(lines) > limit:
            stdout().print(f"  ... and {len(lines) - limit} more")


@app.command()
def status(
    state: Annotated[str | None, typer.Option(help="Only datasets in this state (ok, stale, failing, ...).")] = None,
    category: Annotated[str | None, typer.Option(help="Only datasets of this category.")] = None,
    system: Annotated[bool, typer.Option("--system", help="The system instead: store, broker, beat, workers.")] = False,
    catalogue: CatalogueOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every dataset's state (ok, stale, failing, held, ...), why, last success and next due."""
    from models.db import session_factory
    from models.types import utcnow
    from worker.status import longest_key_and_category, status_rows

    settings = load_settings(catalogue)
    if system:
        report_system(settings, as_json)
        return
    check_state_filter(state)
    cat = open_catalogue(settings)
    ensure_schema(settings)
    now = utcnow()
    sessions = session_factory(settings.database_url, settings.dataset_table())
    rows = (
        row
        for row in status_rows(sessions, cat, settings, now)
        if (state is None or row["state"] == state) and (category is None or row["category"] == category)
    )
    if as_json:
        print_json_array(rows)
    else:
        print_status_table(rows, now, longest_key_and_category(sessions, cat))


KeyArgument = Annotated[str, typer.Argument(help="Dataset key.")]


@contextlib.contextmanager
def review_context() -> Iterator[SyncContext]:
    """A context on the configured store for review actions; their errors exit 1 with the reason."""
    from worker.context import SyncContext
    from worker.review import ReviewError, UnknownDataset

    settings = get_settings()
    ensure_schema(settings)
    ctx = SyncContext.from_settings(settings)
    try:
        yield ctx
    except UnknownDataset as exc:
        raise fail(str(exc)) from exc
    except ReviewError as exc:
        raise fail(str(exc), code=1) from exc
    finally:
        ctx.close()


@app.command("history")
def history_command(key: KeyArgument, as_json: JsonOption = False) -> None:
    """Every stored version of a dataset, newest first, with its change counts."""
    from worker import review

    with review_context() as ctx:
        rows = review.history(ctx, key)
    if as_json:
        stdout().print_json(data=rows)
        return
    from rich.table import Table

    table = Table(title=f"{key}: versions")
    for column in ("version", "created", "origin", "options", "+added", "-removed", "~relabelled", "run"):
        table.add_column(column, justify="left" if column in ("created", "origin") else "right")
    for row in rows:
        table.add_row(
            str(row["version"]),
            row["created_at"][:19].replace("T", " "),
            row["origin"],
            str(row["options"]),
            str(row["codes_added"]),
            str(row["codes_removed"]),
            str(row["codes_relabelled"]),
            _text(row["run_id"]),
        )
    stdout().print(table)


@app.command("diff")
def diff_command(
    key: KeyArgument,
    from_version: Annotated[
        int | None, typer.Option("--from", help="Older version (default: the one before --to).")
    ] = None,
    to_version: Annotated[int | None, typer.Option("--to", help="Newer version (default: the current one).")] = None,
    held: Annotated[bool, typer.Option("--held", help="Show the held change instead.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The codes added, removed and relabelled between two versions (or in the held change)."""
    from worker import review

    with review_context() as ctx:
        if held:
            reason, diff = review.held_change(ctx, key)
            title, payload = f"{key}: held change ({reason})", {"key": key, "held": True, "reason": reason}
        else:
            old, new, diff = review.version_diff(ctx, key, from_version, to_version)
            title, payload = f"{key}: version {old} -> {new}", {"key": key, "from": old, "to": new}
    if as_json:
        stdout().print_json(data={**payload, **diff.counts(), "changes": diff.to_json()})
        return
    stdout().print(title)
    print_changes(key, diff, limit=10_000)
    counts = diff.counts()
    stdout().print(f"added: {counts['added']}  removed: {counts['removed']}  relabelled: {counts['relabelled']}")


@app.command("rollback")
def rollback_command(
    key: KeyArgument, to_version: Annotated[int, typer.Option("--to", help="The version to restore.")]
) -> None:
    """Store a new version equal to an earlier one; auto-sync stays paused until `datasync release`."""
    from worker import review

    with review_context() as ctx:
        outcome = review.rollback(ctx, key, to_version)
    stdout().print(
        f"{key}: now version {outcome.version} (equal to version {to_version}); auto-sync paused "
        f"until `datasync release {key}`"
    )


@app.command("accept")
def accept_command(key: KeyArgument) -> None:
    """Apply a change the guard rails held back."""
    from worker import review

    with review_context() as ctx:
        outcome = review.accept(ctx, key)
    counts = outcome.diff.counts()
    stdout().print(
        f"{key}: held change applied as version {outcome.version} (+{counts['added']} "
        f"-{counts['removed']} ~{counts['relabelled']})"
    )


@app.command("reject")
def reject_command(key: KeyArgument) -> None:
    """Drop a held change; the same upstream content will not be held again."""
    from worker import review

    with review_context() as ctx:
        review.reject(ctx, key)
    stdout().print(f"{key}: held change dropped; the stored list stays as it is")


@app.command("release")
def release_command(key: KeyArgument) -> None:
    """Let auto-sync run again for a dataset paused by a rollback."""
    from worker import review

    with review_context() as ctx:
        review.release(ctx, key)
    stdout().print(f"{key}: auto-sync released")


@app.command("prune")
def prune_command(
    older_than_days: Annotated[
        int | None,
        typer.Option("--older-than-days", min=1, help="Age cut-off (default: DATASYNC_RUN_RETENTION_DAYS)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Delete old sync_runs rows (beat does this daily); each dataset's last run and runs behind versions stay."""
    from models.db import session_factory
    from models.types import utcnow
    from worker.runs import prune_runs

    settings = get_settings()
    days = older_than_days or settings.run_retention_days
    if not days:
        raise fail("DATASYNC_RUN_RETENTION_DAYS is 0 (keep every run); pass --older-than-days N to prune anyway")
    ensure_schema(settings)
    cutoff = utcnow() - timedelta(days=days)
    deleted = prune_runs(session_factory(settings.database_url), cutoff)
    if as_json:
        stdout().print_json(data={"deleted": deleted, "older_than_days": days, "cutoff": cutoff.isoformat()})
        return
    stdout().print(f"pruned {deleted} sync_runs row(s) started before {cutoff:%Y-%m-%d %H:%M} UTC ({days} days)")


LogLevel = Annotated[str, typer.Option("--loglevel", help="Celery log level.")]


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(ctx: typer.Context, loglevel: LogLevel = "INFO") -> None:
    """The main job: migrate, then a worker with beat (embedded Redis unless DATASYNC_BROKER_URL is set).

    Extra arguments go to ``celery worker``. Ctrl-C stops everything cleanly.
    """
    import multiprocessing

    from models.db import migrate
    from worker.embedded import STATE_DIR, embedded_broker

    settings = get_settings()
    open_catalogue(settings)
    migrate(settings.database_url, settings.dataset_table())
    check_store(settings)
    if settings.broker_url:
        check_reachable("the broker", settings.broker_url, settings.connect_timeout)
    with contextlib.ExitStack() as stack:
        if not settings.broker_url:
            url = stack.enter_context(embedded_broker())
            stderr().print(f"embedded Redis broker at {url} (state in {STATE_DIR}/)")
            use_broker(url)
        stderr().print(f"store: {safe_url(settings.database_url)}; catalogue: {settings.catalogue}")
        celery_app().worker_main(["worker", "--beat", f"--loglevel={loglevel}", *ctx.args])
        for child in multiprocessing.active_children():  # the embedded beat releases its lock last
            child.join(10)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context, loglevel: LogLevel = "INFO") -> None:
    """A production worker process (needs DATASYNC_BROKER_URL). Extra arguments go to ``celery worker``."""
    settings = require_broker()
    ensure_schema(settings)
    celery_app().worker_main(["worker", f"--loglevel={loglevel}", *ctx.args])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def beat(ctx: typer.Context, loglevel: LogLevel = "INFO") -> None:
    """The scheduler (run exactly one; a second one waits on the RedBeat lock)."""
    require_broker()
    celery_app().start(["beat", f"--loglevel={loglevel}", *ctx.args])


@app.command()
def resync(
    keys: Annotated[list[str] | None, typer.Argument(help="Dataset keys.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every enabled dataset.")] = False,
    category: Annotated[str | None, typer.Option(help="Only datasets of this category.")] = None,
    force: ForceOption = False,
    refetch: RefetchOption = False,
    accept_changes: AcceptChangesOption = False,
    wait: Annotated[bool, typer.Option(help="Wait for the results and print them.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 900.0,
    catalogue: CatalogueOption = None,
    as_json: JsonOption = False,
) -> None:
    """Enqueue a manual re-sync on the workers; with --wait, exit 1 if any failed."""
    if not keys and not all_ and not category:
        raise fail("name dataset keys, or use --all or --category")
    settings = load_settings(catalogue)
    entries = select_entries(open_catalogue(settings), keys, all_, category)
    broker_settings = require_broker()
    if wait and broker_settings.result_backend:
        check_reachable("the result backend", broker_settings.result_backend, broker_settings.connect_timeout)
    from worker.tasks import enqueue_syncs

    brief_broker_use(broker_settings)
    results = enqueue_syncs(
        [entry.key for entry in entries], force, "manual", refetch=refetch, accept_changes=accept_changes
    )
    if not wait:
        for entry, result in zip(entries, results, strict=True):
            stdout().print(f"{entry.key}: queued as task {result.id}")
        return
    outcomes = [wait_for(entry.key, result, timeout) for entry, result in zip(entries, results, strict=True)]
    if as_json:
        stdout().print_json(data=[outcome.to_json() for outcome in outcomes])
    else:
        print_outcomes(outcomes, dry_run=False)
    if any(outcome.failed for outcome in outcomes):
        raise typer.Exit(1)


def wait_for(key: str, result: Any, timeout: float) -> SyncOutcome:
    from celery.exceptions import TimeoutError as CeleryTimeout

    try:
        payload = result.get(timeout=timeout, propagate=False)
    except CeleryTimeout:
        return SyncOutcome(key, "failed", error_kind="wait_timeout", error=f"no result within {timeout:g} s")
    if not isinstance(payload, dict):
        return SyncOutcome(key, "failed", error_kind="task_error", error=f"task failed: {payload!r}")
    return SyncOutcome.from_json(payload)


def require_broker() -> Settings:
    """Production processes need a broker; a running ``datasync run`` in this directory counts."""
    from worker.embedded import running_broker_url

    settings = get_settings()
    if settings.broker_url:
        check_reachable("the broker", settings.broker_url, settings.connect_timeout)
        return settings
    url = running_broker_url()
    if url is None:
        raise fail("no broker: set DATASYNC_BROKER_URL (or start `datasync run` in this directory)")
    return use_broker(url)


def brief_broker_use(settings: Settings) -> None:
    """``resync`` talks to the broker for seconds: fail within the connect timeout, no patient retries."""
    celery_app().conf.update(
        broker_connection_timeout=settings.connect_timeout,
        broker_connection_retry=False,
        broker_connection_max_retries=0,
        task_publish_retry=False,
        redis_socket_connect_timeout=settings.connect_timeout,
        result_backend_always_retry=False,
        result_backend_max_retries=0,
    )


def use_broker(url: str) -> Settings:
    """Point this process (and the Celery app, configured lazily) at ``url``."""
    os.environ["DATASYNC_BROKER_URL"] = url
    get_settings.cache_clear()
    return get_settings()


def celery_app() -> Any:
    from worker.celery_app import app as application

    return application


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


register_healthcheck(app)
register_publish(app, open_catalogue, ensure_schema)
register(app)
app.add_typer(catalogue_app, name="catalogue")

if __name__ == "__main__":
    main()

"""Monitoring commands: ``status`` output, ``doctor``, ``runs``, ``serve`` and ``apikey``.

``register(app)`` adds them to the ``datasync`` command; the shared helpers (consoles, ``fail``,
settings) are taken from ``worker.cli`` when a command runs, so importing this module is cheap.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.console import stderr, stdout, styled
from worker.settings import Settings

if TYPE_CHECKING:
    from rich.console import JustifyMethod
    from rich.segment import Segment
    from rich.table import Table
    from rich.text import Text

    from worker.health import SystemHealth

STATE_STYLE = {
    "ok": "green",
    "stale": "yellow",
    "failing": "bold red",
    "held": "magenta",
    "paused": "cyan",
    "never_synced": "blue",
    "disabled": "dim",
    "down": "bold red",
    "degraded": "yellow",
}
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
STATUS_COLUMNS = ("dataset", "category", "state", "options", "version", "last success", "next due", "why")
# The widest state ("never_synced"), count, version and age ("999 d 23 h ago", "in 13 d 23 h") each column
# after the first two shows; wider values fold onto a second line.
WIDEST = (12, 7, 7, 14, 12)
WHY_WIDTH, MIN_WHY_WIDTH = 80, 20
TABLE_ROWS = 100  # rows rendered at a time: rich holds a rendered table's every line until it is printed


def _cli() -> Any:
    import worker.cli as cli

    return cli


def state_text(state: str) -> Text:
    return styled(state, STATE_STYLE.get(state, ""))


def check_state_filter(state: str | None) -> None:
    from worker.health import STATES

    if state is not None and state not in STATES:
        raise _cli().fail(f"--state {state!r}: expected one of {', '.join(STATES)}")


def print_status_table(rows: Iterable[dict[str, Any]], now: datetime, longest: tuple[int, int]) -> None:
    """One line per dataset, coloured by state; reasons and errors wrap instead of being cut.

    Printed as the rows come, as one table: ``TABLE_ROWS`` rows are rendered at a time with the column
    widths fixed before the first (``longest`` key and category from the store and the catalogue), and
    each piece's edges dropped where it joins the next.
    """
    from rich.segment import Segments

    from worker.status import batched

    out = stdout()
    widths = status_widths(out.width, *longest)
    bottom: list[Segment] = []
    for number, chunk in enumerate(batched(rows, TABLE_ROWS)):
        lines = out.render_lines(_status_table(chunk, now, widths, header=number == 0), pad=False, new_lines=True)
        bottom = lines.pop()
        for line in lines[1 if number else 0 :]:
            out.print(Segments(line), end="")
    if not bottom:  # no rows: the header alone, as an empty table shows
        out.print(_status_table([], now, widths, header=True))
        return
    out.print(Segments(bottom), end="")


def status_widths(console_width: int, longest_key: int, longest_category: int) -> tuple[int, ...]:
    """Every column's width: its header's or its widest value's, and the reason's what is left (up to ``WHY_WIDTH``)."""
    values = (longest_key, longest_category, *WIDEST)
    fixed = [max(len(name), widest) for name, widest in zip(STATUS_COLUMNS, values, strict=False)]
    borders = 3 * len(STATUS_COLUMNS) + 1  # a bar and a space either side of each cell, and the closing bar
    return (*fixed, max(MIN_WHY_WIDTH, min(WHY_WIDTH, console_width - sum(fixed) - borders)))


def _status_table(rows: Iterable[dict[str, Any]], now: datetime, widths: tuple[int, ...], header: bool) -> Table:
    from rich.table import Table

    table = Table(show_header=header)
    for column, width in zip(STATUS_COLUMNS, widths, strict=True):
        justify: JustifyMethod = "right" if column in ("options", "version") else "left"
        table.add_column(column, justify=justify, overflow="fold", width=width)
    for row in rows:
        error = row["last_error"]
        why = row["reason"] + (f"\n{error['kind']}: {error['message']}" if error and row["state"] != "held" else "")
        why += f"\npublish: {row['publish_error']['message']}" if row["publish_error"] else ""
        table.add_row(
            row["key"],
            row["category"],
            state_text(row["state"]),
            str(row["options_count"]),
            "-" if row["version"] is None else str(row["version"]),
            _ago(row["last_success_at"], now),
            _until(row["next_due_at"], now),
            styled(why),
        )
    return table


def print_json_array(items: Iterable[Any]) -> None:
    """What ``out.print_json(data=list(items))`` prints, text and colours, one element at a time: a long
    array is never one document in memory."""
    opening = "[\n"
    for item in items:
        _print_json_text(opening + textwrap.indent(json.dumps(item, indent=2, ensure_ascii=False), "  "))
        opening = ",\n"
    _print_json_text("[]\n" if opening == "[\n" else "\n]\n")


def _print_json_text(fragment: str) -> None:
    from rich.highlighter import JSONHighlighter

    out = stdout()
    if not out.is_terminal:  # no colours to add: the text itself, without rich's rendering (most of the time)
        out.file.write(fragment)
        return
    text = JSONHighlighter()(fragment)
    text.no_wrap, text.overflow = True, None
    out.print(text, soft_wrap=True, end="")


def _ago(stamp: str | None, now: datetime) -> str:
    from worker.health import format_age

    return f"{format_age(now - _parse(stamp))} ago" if stamp else "-"


def _until(stamp: str | None, now: datetime) -> str:
    from worker.health import format_age

    if not stamp:
        return "-"
    moment = _parse(stamp)
    return "now" if moment <= now else f"in {format_age(moment - now)}"


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def report_system(settings: Settings, as_json: bool) -> None:
    """Print the system state; exit 1 when any part is down."""
    from models.types import utcnow
    from worker.broker import broker_url_of
    from worker.health import system_health

    health = system_health(settings, broker_url_of(settings), utcnow())
    if as_json:
        stdout().print_json(data=health.to_json())
    else:
        print_system(health)
    if health.down:
        raise typer.Exit(1)


def print_system(health: SystemHealth) -> None:
    from rich.table import Table

    out = stdout()
    table = Table(title=styled("system: ") + state_text(health.status))
    for column in ("part", "status", "detail"):
        table.add_column(column, overflow="fold")
    for component in health.components:
        table.add_row(component.name, state_text(component.status), styled(component.detail))
    out.print(table)
    if health.queue_length is not None:
        oldest = health.oldest_queued_seconds
        age = f", oldest waiting {oldest:.0f} s" if oldest is not None else ""
        out.print(f"queue: {health.queue_length} task(s){age}")
    if health.workers:
        out.print("workers: " + ", ".join(health.workers))


def doctor(as_json: JsonOption = False) -> None:
    """Check the store, broker, scheduler and workers; exit 1 if any is down."""
    report_system(_cli().get_settings(), as_json)


def runs(
    key: Annotated[str | None, typer.Argument(help="Only this dataset.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status (failed, held, ...).")] = None,
    since: Annotated[str | None, typer.Option(help="Only runs started since: an age (2h, 3d) or ISO time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The run history (every sync attempt), newest first."""
    from models.db import session_factory
    from models.types import utcnow
    from worker.run_log import RunQueryError, list_runs, parse_since

    cli = _cli()
    settings = cli.get_settings()
    cli.ensure_schema(settings)
    now = utcnow()
    try:
        total, rows = list_runs(
            session_factory(settings.database_url),
            key,
            status,
            parse_since(since, now) if since else None,
            limit,
            now=now,
            settings=settings,
        )
    except RunQueryError as exc:
        raise cli.fail(str(exc)) from exc
    if as_json:
        stdout().print_json(data=rows)
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} of {total} run(s)")
    for column in ("id", "dataset", "status", "trigger", "started", "seconds", "+/-/~", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        error = f"{row['error_kind']}: {row['error']}" if row["error_kind"] else ""
        table.add_row(
            str(row["id"]),
            row["dataset"],
            cli.status_text(row["status"]),
            row["trigger"],
            (row["started_at"] or "")[:19].replace("T", " "),
            "-" if row["duration_seconds"] is None else f"{row['duration_seconds']:.2f}",
            f"{row['codes_added']}/{row['codes_removed']}/{row['codes_relabelled']}",
            styled(error),
        )
    stdout().print(table)


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
) -> None:
    """The HTTP status API, metrics and status page (FastAPI on uvicorn)."""
    import uvicorn

    from api.app import create_app

    cli = _cli()
    settings = cli.get_settings()
    cli.ensure_schema(settings)
    catalogue = cli.open_catalogue(settings)
    stderr().print(f"serving http://{host}:{port}/ (docs at /api/docs, status page at /status)")
    uvicorn.run(create_app(settings, catalogue), host=host, port=port, log_level="info", server_header=False)


apikey_app = typer.Typer(no_args_is_help=True, help="API keys for the HTTP API (shown once, stored as hashes).")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. 'grafana'.")],
    role: Annotated[str, typer.Option(help="viewer (reads) or operator (reads, re-syncs, review).")] = "viewer",
    expires: Annotated[str | None, typer.Option(help="Expiry date or time (ISO 8601, UTC).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it once; only its hash is kept."""
    from models.types import utcnow
    from worker import apikeys

    cli = _cli()
    sessions = _key_store()
    now = utcnow()
    try:
        expires_at = _parse_expiry(expires) if expires else None
        key, raw = apikeys.create_key(sessions, name, role, expires_at, now)
    except (apikeys.ApiKeyError, ValueError) as exc:
        raise cli.fail(str(exc)) from exc
    if as_json:
        stdout().print_json(data={"id": key.id, "prefix": key.prefix, "name": key.name, "role": key.role, "key": raw})
        return
    stdout().print(raw)
    stderr().print(f"key {key.prefix}… ({key.role}) for {key.name!r}: copy it now, it is not shown again")


@apikey_app.command("list")
def apikey_list(as_json: JsonOption = False) -> None:
    """Every key without its secret: prefix, name, role, created, last used, expires."""
    from worker import apikeys

    rows = apikeys.list_keys(_key_store())
    if as_json:
        stdout().print_json(data=rows)
        return
    from rich.table import Table

    table = Table()
    for column in ("id", "prefix", "name", "role", "created", "last used", "expires", "revoked"):
        table.add_column(column)
    for row in rows:
        stamps = (row[field] for field in ("created_at", "last_used_at", "expires_at", "revoked_at"))
        table.add_row(
            str(row["id"]),
            row["prefix"],
            row["name"],
            row["role"],
            *((s or "-")[:16].replace("T", " ") for s in stamps),
        )
    stdout().print(table)


@apikey_app.command("revoke")
def apikey_revoke(ident: Annotated[str, typer.Argument(help="The key's id or prefix (from `apikey list`).")]) -> None:
    """Revoke a key; the next request with it gets 401."""
    from models.types import utcnow
    from worker import apikeys

    cli = _cli()
    try:
        key = apikeys.revoke_key(_key_store(), ident, utcnow())
    except apikeys.ApiKeyError as exc:
        raise cli.fail(str(exc)) from exc
    stdout().print(f"revoked key {key.prefix}… ({key.name!r})")


def _key_store() -> Any:
    from models.db import session_factory

    cli = _cli()
    settings = cli.get_settings()
    cli.ensure_schema(settings)
    return session_factory(settings.database_url)


def _parse_expiry(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"--expires {text!r}: give an ISO date or time, e.g. 2027-06-30") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
    app.command("runs")(runs)
    app.command("serve")(serve)
    app.add_typer(apikey_app, name="apikey")

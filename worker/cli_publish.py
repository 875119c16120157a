"""``datasync publish``, and located ``{message, code, errors}`` documents for bad input under ``--json``.

Registered by ``worker/cli.py``, which hands over the helpers it shares with its own commands (this
module never imports it, so ``python -m worker.cli`` loads the CLI once).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.console import print_error, stdout, styled
from worker.problems import problem_document
from worker.settings import ConfigurationError, Settings, get_settings

if TYPE_CHECKING:
    from publisher.publish import PublishOutcome
    from worker.catalogue import Catalogue, CatalogueError

STYLE = {"created": "green", "updated": "cyan", "withdrawn": "yellow", "unchanged": "dim", "skipped": "dim"}
STYLE.update(dict.fromkeys(("invalid", "rejected", "failed"), "bold red"))
BAD_INPUT = ("invalid", "rejected")


def problem_exit(document: dict[str, Any], as_json: bool) -> typer.Exit:
    """Bad input ends with its one-line message on stderr, and under ``--json`` the whole document on stdout."""
    _report(document, as_json, "error: ")
    return typer.Exit(2)


def catalogue_exit(exc: CatalogueError) -> typer.Exit:
    return problem_exit(problem_document(str(exc), "catalogue_invalid", exc.errors), wants_json())


def settings_exit(exc: ConfigurationError) -> SystemExit:
    """For ``main()``, outside any typer command (so a plain ``SystemExit``)."""
    _report(problem_document(str(exc), "settings_invalid", exc.errors), wants_json(), "configuration error: ")
    return SystemExit(2)


def _report(document: dict[str, Any], as_json: bool, label: str) -> None:
    if as_json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    print_error(document["message"], label)


def wants_json() -> bool:
    """Whether the command line asks for ``--json``: read from argv, since settings and the catalogue are
    checked in shared helpers (and settings even before typer parses any option)."""
    return "--json" in sys.argv[1:]


def register_publish(
    app: typer.Typer,
    open_catalogue: Callable[[Settings], Catalogue],
    ensure_schema: Callable[[Settings], None],
) -> None:
    @app.command("publish")
    def publish_command(
        keys: Annotated[list[str] | None, typer.Argument(help="Dataset keys (or --all).")] = None,
        all_: Annotated[
            bool, typer.Option("--all", help="Every dataset in the catalogue, and withdraw those that left it.")
        ] = False,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Show what would be sent (against the last accepted records).")
        ] = False,
        catalogue: Annotated[Path | None, typer.Option("--catalogue", help="Catalogue TOML.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Publish dataset metadata to the national data catalogue. Exit 1 if any failed, 2 if any record is invalid."""
        if bool(keys) == all_:
            raise problem_exit(problem_document("give dataset keys or --all (one of them)", "usage", []), as_json)
        settings = get_settings().model_copy(update={"catalogue": catalogue}) if catalogue else get_settings()
        loaded = open_catalogue(settings)
        ensure_schema(settings)
        from models.db import session_factory
        from publisher.publish import PublishConfigError, Publisher, publish_many, select_keys

        publisher = Publisher(loaded, session_factory(settings.database_url, settings.dataset_table()), settings)
        try:
            outcomes = publish_many(publisher, select_keys(publisher, None if all_ else keys), dry_run=dry_run)
        except PublishConfigError as exc:
            raise problem_exit(exc.document, as_json) from exc
        finally:
            publisher.close()
        if as_json:
            print(json.dumps([outcome.to_json() for outcome in outcomes], indent=2, ensure_ascii=False))
        else:
            print_outcomes(outcomes, dry_run)
        if any(outcome.status in BAD_INPUT for outcome in outcomes):
            raise typer.Exit(2)
        if any(outcome.failed for outcome in outcomes):
            raise typer.Exit(1)


def print_outcomes(outcomes: list[PublishOutcome], dry_run: bool) -> None:
    from rich.table import Table

    table = Table(title="dry run: nothing was sent" if dry_run else None)
    for column in ("dataset", "result", "catalogue id", "members sent" if not dry_run else "members to send"):
        table.add_column(column)
    for outcome in outcomes:
        members = ", ".join(outcome.patch or {}) if outcome.status not in ("created", "would_create") else "(all)"
        table.add_row(
            outcome.key, styled(outcome.status, STYLE.get(outcome.status, "")), outcome.catalogue_id or "-", members
        )
    stdout().print(table)
    for outcome in outcomes:
        if outcome.error:
            stdout().print(outcome.error["message"])
    tally: dict[str, int] = {}
    for outcome in outcomes:
        tally[outcome.status] = tally.get(outcome.status, 0) + 1
    stdout().print("  ".join(f"{status}: {count}" for status, count in tally.items()))

"""``datasync catalogue ...``: check a catalogue without fetching, and discover lists to add to it."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.console import print_error, stderr, stdout
from worker.problems import problem_document
from worker.settings import get_settings

if TYPE_CHECKING:
    from worker.catalogue import CatalogueEntry, CatalogueError

NHS_DD_INDEX = "https://www.datadictionary.nhs.uk/data_elements_overview.html"

catalogue_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Check the catalogue, and find lists to add to it."
)


@catalogue_app.command("check")
def check_command(
    path: Annotated[Path | None, typer.Argument(help="Catalogue TOML (default: DATASYNC_CATALOGUE).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A {message, code, errors} document on stdout.")] = False,
) -> None:
    """Validate a catalogue without fetching anything; exit 2 listing every located problem."""
    from worker.catalogue import catalogue_problems, load_catalogue

    settings = get_settings()
    target, limits = path or settings.catalogue, settings.dataset_table().limits
    problems = catalogue_problems(target, limits)
    for problem in problems:
        print_error(str(problem))
    if problems:
        if as_json:
            print_json(problems_document(target, problems))
        raise typer.Exit(2)
    entries = load_catalogue(target, limits).entries
    kinds = Counter(entry.source for entry in entries)
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    if as_json:
        print_json({"message": f"{target}: {len(entries)} datasets, no problems", "code": "ok", "errors": []})
    else:
        stdout().print(f"{target}: {len(entries)} datasets, all valid ({summary})", soft_wrap=True)
    for variable, keys in unset_credentials(entries).items():
        stderr().print(f"note: environment variable {variable} is not set here (credentials of {', '.join(keys)})")


def problems_document(target: Path, problems: list[CatalogueError]) -> dict[str, Any]:
    """All problems in one document; each keeps its located errors (or, unlocated, its own message)."""
    message = str(problems[0]) if len(problems) == 1 else f"{target}: {len(problems)} invalid entries"
    located = [problem_document(str(exc), "catalogue_invalid", exc.errors)["errors"] for exc in problems]
    return {"message": message, "code": "catalogue_invalid", "errors": [one for errors in located for one in errors]}


def print_json(document: Any) -> None:
    """Plain ``print``: rich would read ``[...]`` and ``:name:`` inside messages as markup and emoji."""
    print(json.dumps(document, indent=2, ensure_ascii=False))


def unset_credentials(entries: tuple[CatalogueEntry, ...]) -> dict[str, list[str]]:
    """Credential variables the entries name that this environment lacks, with the keys needing them."""
    from scrapers import SOURCES

    unset: dict[str, list[str]] = {}
    for entry in entries:
        for variable in SOURCES[entry.source].credential_variables(entry):
            if not os.environ.get(variable):
                unset.setdefault(variable, []).append(entry.key)
    return unset


@catalogue_app.command("discover")
def discover_command(
    source: Annotated[str, typer.Argument(help="Where to look: nhs_dd (the NHS Data Dictionary).")],
    index: Annotated[str, typer.Option(help="The data-element index page.")] = NHS_DD_INDEX,
    limit: Annotated[int | None, typer.Option(min=1, help="Check at most this many new elements.")] = None,
    catalogue: Annotated[Path | None, typer.Option(help="Catalogue TOML (default: DATASYNC_CATALOGUE).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print catalogue entries for code lists the catalogue lacks (exit 1 if the index is unreachable)."""
    if source != "nhs_dd":
        print_error(f"cannot discover {source!r} lists (known: nhs_dd)")
        raise typer.Exit(2)
    from scrapers.errors import SyncError, redact
    from worker.catalogue import CatalogueError, load_catalogue
    from worker.context import SyncContext, throttle_for  # the HTTP stack only when discovering
    from worker.discover import discover_nhs_dd

    settings = get_settings()
    try:
        known = load_catalogue(catalogue or settings.catalogue, settings.dataset_table().limits)
    except CatalogueError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    ctx = SyncContext.from_settings(settings, throttle_for(settings))
    try:
        found = discover_nhs_dd(known, ctx.http, index_url=index, limit=limit)
    except SyncError as error:
        print_error(redact(error.message))
        raise typer.Exit(1) from error
    finally:
        ctx.close()
    for line in found.skipped:
        print_error(redact(line), "not checked: ", "yellow")
    if found.unchecked:
        stderr().print(f"{found.unchecked} more new element(s) not checked (raise --limit)")
    if as_json:
        stdout().print(json.dumps([candidate.to_json() for candidate in found.candidates], indent=2), soft_wrap=True)
        return
    for candidate in found.candidates:
        stdout().print(candidate.to_toml() + "\n", soft_wrap=True)
    stderr().print(f"{len(found.candidates)} new code list(s) found")

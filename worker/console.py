"""Where the CLI prints: two rich consoles, built when a command first prints.

Importing rich takes ~30 ms, an eighth of every command's start-up (issue 11), and ``datasync --help``
needs none of it: Typer prints the help. Markup and emoji codes are off, so what datasync prints (a
label, a path, a URL) appears exactly as it is; colours come from ``Text`` styles.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

PIPED_WIDTH = 200  # off a terminal: a table piped to a file or a log keeps each row on one line


@cache
def stdout() -> Console:
    from rich.console import Console

    return Console(markup=False, highlight=False, emoji=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)


@cache
def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, markup=False, highlight=False, emoji=False, soft_wrap=True)


def styled(text: str, style: str = "") -> Text:
    from rich.text import Text

    return Text(text, style=style)


def print_error(message: str, label: str = "error: ", style: str = "bold red") -> None:
    """One line on stderr, its label coloured on a terminal (the message in the terminal's own colour)."""
    from rich.text import Text

    stderr().print(Text.assemble((label, style), message))

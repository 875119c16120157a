"""The CLI's consoles: built once, on first print, and literal about what they print."""

from __future__ import annotations

import pytest

from worker import console


def test_each_console_is_built_once() -> None:
    assert console.stdout() is console.stdout()
    assert console.stderr() is console.stderr() and console.stderr() is not console.stdout()


def test_a_piped_table_keeps_its_rows_on_one_line() -> None:
    assert console.stdout().width == console.PIPED_WIDTH  # pytest's captured stdout is no terminal


def test_markup_and_emoji_codes_are_printed_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    console.stdout().print("[bold]Asian[/bold] :hospital: [link=x]")
    console.print_error("missing [red]field[/red] :x:")
    printed = capsys.readouterr()
    assert printed.out == "[bold]Asian[/bold] :hospital: [link=x]\n"
    assert printed.err == "error: missing [red]field[/red] :x:\n"


def test_an_error_keeps_its_label_and_colours_it_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    terminal = Console(force_terminal=True, color_system="standard", markup=False, emoji=False, width=80)
    monkeypatch.setattr(console, "stderr", lambda: terminal)
    with terminal.capture() as captured:
        console.print_error("a long message", "not checked: ", "yellow")
    assert captured.get() == "\x1b[33mnot checked: \x1b[0ma long message\n"

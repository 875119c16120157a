"""``status`` streams: the same rows whatever the chunk size, codes counted by the database, and the
table and ``--json`` printed piece by piece exactly as if printed whole."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from rich.console import Console

from models.db import get_engine
from models.schema import Dataset, SyncRun, SyncState
from models.types import utcnow
from tests.sqlcount import counting
from worker import cli_monitoring, status
from worker.catalogue import Catalogue
from worker.context import SyncContext
from worker.status import dataset_status, longest_key_and_category, status_rows

# Not in the shipped catalogue, in an order that a locale-aware collation would sort differently.
STORED_ONLY = {"Zulu_upper": {"1": "one"}, "_underscored": {}, "alpha_only": {f"{n}": f"code {n}" for n in range(7)}}
HELD = "ethnic_category"
# A column read of the stored lists (not one the database counts inside json_each / json_object_keys).
RAW_OPTIONS = re.compile(r"datasets\.options(?!\)| AS JSON\))")


@pytest.fixture
def stored(ctx: SyncContext) -> dict[str, dict[str, str]]:
    """Rows written directly: lists of several sizes, one non-object list, a held change, a failed run."""
    lists = {
        **STORED_ONLY,
        HELD: {"A": "White British", "B": "White Irish"},
        "nhs_trusts": {f"R{n:02d}": f"Trust {n}" for n in range(40)},
        "zygosity_status": {},
    }
    now = utcnow()
    with ctx.sessions.begin() as session:
        for key, options in lists.items():
            session.add(Dataset(key=key, name=key, category="nhs_dd", source_type="scrape", options=options))
        session.add(Dataset(key="list_not_object", name="odd", category="nhs_dd", source_type="scrape", options=[]))
        session.add(Dataset(key="people_own", name="mine", category="user_created", source_type="manual"))
        session.add(
            SyncState(
                dataset_key=HELD,
                last_success_at=now - timedelta(hours=2),
                held_options={"A": "White British", "C": "Any other White background"},
                held_reason="removes 1 code",
            )
        )
        session.add(SyncRun(dataset_key="nhs_trusts", trigger="cli", status="failed", error_kind="http_500"))
    return {**lists, "list_not_object": {}}


def test_rows_come_in_catalogue_order_then_stored_ones_by_code_point(
    ctx: SyncContext, catalogue: Catalogue, stored: dict[str, dict[str, str]]
) -> None:
    rows = dataset_status(ctx.sessions, catalogue, ctx.settings)
    keys = [row["key"] for row in rows]
    assert keys == [entry.key for entry in catalogue.entries] + sorted([*STORED_ONLY, "list_not_object"])
    counts = {row["key"]: row["options_count"] for row in rows}
    assert {key: counts[key] for key in stored} == {key: len(options) for key, options in stored.items()}
    held = next(row for row in rows if row["key"] == HELD)
    assert held["held_changes"] == {"added": 1, "removed": 1, "relabelled": 0}
    assert held["held_diff"]["added"] == {"C": "Any other White background"}


def test_the_rows_do_not_depend_on_the_chunk_size(
    ctx: SyncContext, catalogue: Catalogue, stored: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    whole = dataset_status(ctx.sessions, catalogue, ctx.settings, now)
    monkeypatch.setattr(status, "CHUNK", 2)
    assert dataset_status(ctx.sessions, catalogue, ctx.settings, now) == whole


def test_only_a_held_change_has_its_list_read(
    ctx: SyncContext, catalogue: Catalogue, stored: dict[str, dict[str, str]]
) -> None:
    with counting(get_engine(ctx.settings.database_url)) as count:
        assert len(list(status_rows(ctx.sessions, catalogue, ctx.settings))) > len(catalogue.entries)
    raw = [text for text in count.texts if RAW_OPTIONS.search(text)]
    assert len(raw) == 1  # the one chunk that holds HELD, for its diff


def test_the_table_is_sized_for_the_longest_key_stored_or_catalogued(
    ctx: SyncContext, catalogue: Catalogue, stored: dict[str, dict[str, str]]
) -> None:
    longest = max(len(key) for key in [*stored, *(entry.key for entry in catalogue.entries)])
    widest_category = max(len(entry.category) for entry in catalogue.entries)
    assert longest_key_and_category(ctx.sessions, catalogue) == (longest, widest_category)


def row(number: int, state: str = "ok") -> dict[str, Any]:
    stamp = (utcnow() - timedelta(hours=number)).isoformat()
    return {
        "key": f"dataset_{number}",
        "category": "nhs_dd",
        "state": state,
        "options_count": number * 3,
        "version": number or None,
        "last_success_at": stamp,
        "next_due_at": None,
        "reason": f"last success {number} h ago, a reason long enough to fold onto a second line of the column",
        "last_error": {"kind": "http_404", "message": "HTTP 404 Not Found"} if state == "failing" else None,
        "publish_error": None,
        "nested": {"ünïcode": ["ok", 1.5, None, True]},
    }


@pytest.fixture(params=[False, True], ids=["pipe", "terminal"])
def printed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What ``datasync`` writes to stdout, on a pipe or (with colours) on a terminal."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=150, markup=False, highlight=False, emoji=False, force_terminal=request.param)
    monkeypatch.setattr(cli_monitoring, "stdout", lambda: console)
    return buffer


@pytest.mark.parametrize("count", [0, 1, 7])
def test_json_is_streamed_exactly_as_rich_prints_the_whole_array(printed: io.StringIO, count: int) -> None:
    rows = [row(number, "failing" if number % 3 else "ok") for number in range(count)]
    cli_monitoring.print_json_array(iter(rows))
    streamed = printed.getvalue()
    printed.seek(0), printed.truncate()
    cli_monitoring.stdout().print_json(data=rows)
    assert streamed == printed.getvalue()
    if not cli_monitoring.stdout().is_terminal:
        assert json.loads(streamed) == rows


@pytest.mark.parametrize("count", [0, 3, 7])
def test_the_table_is_printed_in_pieces_exactly_as_one_table(
    printed: io.StringIO, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    monkeypatch.setattr(cli_monitoring, "TABLE_ROWS", 3)
    now = utcnow()
    rows = [row(number, "failing" if number % 2 else "ok") for number in range(count)]
    cli_monitoring.print_status_table(iter(rows), now, (12, 8))
    streamed = printed.getvalue()
    printed.seek(0), printed.truncate()
    widths = cli_monitoring.status_widths(cli_monitoring.stdout().width, 12, 8)
    cli_monitoring.stdout().print(cli_monitoring._status_table(rows, now, widths, header=True))
    assert streamed == printed.getvalue()
    assert streamed.count("dataset_") == count and streamed.count("┏") == 1

"""History, diff, rollback and held-change review, through the CLI as an operator uses it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from models.schema import SyncRun, SyncState
from tests.upstream import Upstream
from worker.catalogue import Catalogue
from worker.cli import app
from worker.context import SyncContext
from worker.pipeline import sync_dataset
from worker.settings import Settings

runner = CliRunner()
KEY = "london_boroughs"


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATASYNC_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATASYNC_URL_REWRITES", settings.url_rewrites)

    def invoke(*args: str, code: int = 0):
        from worker.settings import get_settings

        get_settings.cache_clear()
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result.output

    return invoke


@pytest.fixture
def boroughs(ctx: SyncContext, catalogue: Catalogue, upstream: Upstream):
    entry = catalogue.select([KEY])[0]
    original = upstream.body_for(upstream.url_path(entry.url))

    def publish(change):
        upstream.set_body(entry.url, json.dumps(change(json.loads(original))).encode())
        return sync_dataset(entry, ctx, trigger="manual")

    assert sync_dataset(entry, ctx).status == "created"
    return entry, publish


def test_history_and_diff_show_what_each_version_changed(cli, boroughs) -> None:
    _, publish = boroughs
    assert (
        publish(
            lambda items: (
                [{**i, "name": "City of London Corporation"} if i["gss_code"] == "E09000001" else i for i in items]
                + [{"gss_code": "E09999999", "name": "New Borough"}]
            )
        ).status
        == "updated"
    )
    versions = json.loads(cli("history", KEY, "--json"))
    assert [(v["version"], v["codes_added"], v["codes_relabelled"]) for v in versions] == [(2, 1, 1), (1, 33, 0)]
    diff = json.loads(cli("diff", KEY, "--json"))
    assert (diff["from"], diff["to"], diff["added"], diff["removed"], diff["relabelled"]) == (1, 2, 1, 0, 1)
    assert diff["changes"]["relabelled"]["E09000001"] == {"from": "City of London", "to": "City of London Corporation"}
    text = cli("diff", KEY, "--from", "1", "--to", "2")
    assert "+ E09999999: New Borough" in text and "~ E09000001: City of London -> City of London Corporation" in text


def test_rollback_restores_a_version_and_pauses_auto_sync(cli, boroughs, ctx: SyncContext) -> None:
    entry, publish = boroughs
    publish(lambda items: [{**i, "name": i["name"] + " (LB)"} if i["gss_code"] == "E09000002" else i for i in items])
    output = cli("rollback", KEY, "--to", "1")
    assert "now version 3" in output
    diff = json.loads(cli("diff", KEY, "--from", "1", "--to", "3", "--json"))
    assert diff["added"] == diff["removed"] == diff["relabelled"] == 0
    status = {row["key"]: row for row in json.loads(cli("status", "--json"))}[KEY]
    assert status["paused"] and status["version"] == 3
    assert sync_dataset(entry, ctx, trigger="schedule").error_kind == "paused"
    cli("release", KEY)
    assert sync_dataset(entry, ctx, trigger="manual").status == "updated"  # the upstream still has the edit
    cli("release", KEY, code=1)


def test_held_change_can_be_seen_and_accepted(cli, boroughs, ctx: SyncContext) -> None:
    _, publish = boroughs
    assert publish(lambda items: items[:11]).status == "held"
    status = {row["key"]: row for row in json.loads(cli("status", "--json"))}[KEY]
    assert status["held"] and status["held_changes"] == {"added": 0, "removed": 22, "relabelled": 0}
    assert len(status["held_diff"]["removed"]) == 22 and status["held_diff"]["removed"]["E09000033"] == "Westminster"
    assert "would remove 22 of 33" in status["held_reason"]
    held = json.loads(cli("diff", KEY, "--held", "--json"))
    assert held["removed"] == 22
    assert "version 2" in cli("accept", KEY)
    status = {row["key"]: row for row in json.loads(cli("status", "--json"))}[KEY]
    assert (status["held"], status["options_count"], status["version"]) == (False, 11, 2)
    cli("accept", KEY, code=1)
    with ctx.sessions() as session:  # a cleared hold is SQL NULL, so plain SQL queries see it right
        assert session.scalar(select(SyncState.dataset_key).where(SyncState.held_options.is_not(None))) is None


def test_rejected_change_is_dropped_and_not_held_again(cli, boroughs, ctx: SyncContext) -> None:
    _, publish = boroughs
    assert publish(lambda items: items[:11]).status == "held"
    cli("reject", KEY)
    status = {row["key"]: row for row in json.loads(cli("status", "--json"))}[KEY]
    assert (status["held"], status["options_count"], status["version"]) == (False, 33, 1)
    again = publish(lambda items: items[:11])
    assert (again.status, again.error_kind) == ("skipped", "rejected")
    assert publish(lambda items: items[:12]).status == "held"  # a different change is reviewed afresh
    with ctx.sessions() as session:
        audit = session.scalars(select(SyncRun).where(SyncRun.error_kind == "rejected")).all()
    assert [run.trigger for run in audit] == ["cli", "manual"]  # the operator's action, then the re-offer
    assert "rejected by an operator" in audit[0].error_message


def test_review_commands_explain_what_is_wrong(cli, boroughs) -> None:
    assert "no held change" in cli("accept", KEY, code=1)
    assert "no version 9" in cli("rollback", KEY, "--to", "9", code=1)
    assert "no dataset 'nope'" in cli("history", "nope", code=2)  # an unknown key is bad input

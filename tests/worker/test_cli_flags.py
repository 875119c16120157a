"""``--force``, ``--refetch`` and ``--accept-changes`` on the command line: each means one thing."""

from __future__ import annotations

import json

import pytest

from tests.upstream import Upstream
from tests.worker.test_cli import datasync
from worker.settings import Settings

BOROUGHS = "https://api.rcpch.ac.uk/nhs-organisations/v1/london_boroughs/extended/"


def outcome(result) -> dict:
    assert result.returncode == 0, result.stderr
    [only] = json.loads(result.stdout)
    return only


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_force_holds_a_mass_removal_and_accept_changes_applies_it(settings: Settings, upstream: Upstream) -> None:
    env = {"DATASYNC_DATABASE_URL": settings.database_url, "DATASYNC_URL_REWRITES": settings.url_rewrites}
    assert outcome(datasync(env, "sync", "london_boroughs", "--json"))["status"] == "created"
    assert outcome(datasync(env, "sync", "london_boroughs", "--force", "--json"))["status"] == "unchanged"
    items = json.loads(upstream.body_for(upstream.url_path(BOROUGHS)))
    upstream.set_body(BOROUGHS, json.dumps(items[:10]).encode())
    held = outcome(datasync(env, "sync", "london_boroughs", "--force", "--refetch", "--json"))
    assert (held["status"], held["version"]) == ("held", 1)
    applied = outcome(datasync(env, "sync", "london_boroughs", "--force", "--accept-changes", "--json"))
    assert (applied["status"], applied["version"], applied["options"]) == ("updated", 2, 10)


@pytest.mark.parametrize("command", ["sync", "resync"])
def test_both_sync_commands_offer_the_three_flags(command: str) -> None:
    result = datasync({}, command, "--help")
    assert all(flag in result.stdout for flag in ("--force", "--refetch", "--accept-changes"))

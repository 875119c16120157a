"""The status page as a person sees it: loaded in real headless Chromium from a real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.api.conftest import FAILING, HELD, NEVER, OK, ApiServer, Deployment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (CI installs it: apt-get install -y chromium)",
)


def browse(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Load ``url`` in headless Chromium and return the DOM it built (stderr carries console/CSP messages)."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([str(CHROMIUM), *flags, *extra, url], capture_output=True, text=True, timeout=120)


def row(dom: str, key: str) -> str:
    match = re.search(rf'<tr id="ds-{key}".*?</tr>', dom, re.S)
    assert match, f"no row for {key}"
    return match.group(0)


def test_a_person_sees_each_state_why_and_the_system(api: ApiServer, deployment: Deployment, tmp_path: Path) -> None:
    deployment.clock.shift(hours=24 * 15)  # the weekly regions list is now stale
    result = browse(f"{api.url}/status", tmp_path / "profile", "--dump-dom")
    dom = result.stdout
    assert "Content Security Policy" not in result.stderr, result.stderr  # the CSP blocked nothing the page needs
    assert re.search(r'id="system" data-status="down"', dom)
    assert re.search(r'id="part-broker"[^>]*>.*?no broker configured', dom, re.S)
    states = dict(re.findall(r'<tr id="ds-(\w+)" data-state="(\w+)"', dom))
    assert states == {OK: "stale", FAILING: "failing", HELD: "held", NEVER: "never_synced"}
    failing = row(dom, FAILING)
    assert 'class="badge s-failing">failing<' in failing and "the last 3 attempts failed (http_404)" in failing
    assert "HTTP 404 Not Found" in failing and "<svg" in failing and failing.count("<rect") == 4
    assert "would remove 30 of 33 codes" in row(dom, HELD)
    assert "15 d 0 h ago" in row(dom, OK) or "14 d 23 h ago" in row(dom, OK)
    assert "never" in row(dom, NEVER) and "no runs" in row(dom, NEVER)


def test_filter_by_state_strict_policy_and_phone_width(api: ApiServer, tmp_path: Path) -> None:
    response = requests.get(f"{api.url}/status?state=held", timeout=30)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy and "script-src" not in policy
    assert 'http-equiv="refresh"' in response.text and "<script" not in response.text
    assert not re.search(r'(src|href)="https?://', response.text)  # nothing loaded from elsewhere
    dom = browse(f"{api.url}/status?state=held", tmp_path / "profile", "--dump-dom").stdout
    assert re.findall(r'<tr id="ds-(\w+)"', dom) == [HELD]
    assert requests.get(f"{api.url}/status?state=bogus", timeout=30).status_code == 400
    shot = tmp_path / "phone.png"
    browse(f"{api.url}/status", tmp_path / "profile2", "--window-size=390,844", f"--screenshot={shot}")
    assert shot.stat().st_size > 1000

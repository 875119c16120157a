"""The status page: server-rendered HTML a person reads on a phone or a wall screen.

No script and no external asset: the only style sheet is inline and allowed by its hash in the
Content-Security-Policy, the charts are inline SVG, filtering is plain links, and the page refreshes
itself with a meta tag.
"""

from __future__ import annotations

import base64
import hashlib
import math
from datetime import datetime
from html import escape

from api.queries import DatasetReader
from models.schema import SyncRun
from worker.broker import broker_url_of
from worker.health import STATES, DatasetHealth, SystemHealth, format_age, system_health
from worker.run_log import recent_runs
from worker.settings import Settings

REFRESH_SECONDS = 60
CHART_RUNS = 20
CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:1rem;color:#1b1b1b;background:#f6f6f4}
h1{font-size:1.3rem;margin:0 0 .5rem}
.system{display:flex;flex-wrap:wrap;gap:.5rem;margin-bottom:1rem}
.part{background:#fff;border-radius:6px;padding:.4rem .7rem;border-left:6px solid #999}
.filters a{margin-right:.6rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.45rem;border-bottom:1px solid #ddd;vertical-align:top}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:4px;color:#fff;font-weight:600}
.s-ok{background:#1d7a35}.s-stale{background:#a86b00}.s-failing,.s-down{background:#b3261e}
.s-held{background:#7b2d8e}.s-paused{background:#1f5f99}.s-never_synced{background:#555}
.s-disabled{background:#888}.s-degraded{background:#a86b00}
.part.s-ok,.part.s-down,.part.s-degraded{background:#fff;border-left-color:currentColor}
.part.s-ok{color:#1d7a35}.part.s-down{color:#b3261e}.part.s-degraded{color:#a86b00}
.part span{color:#1b1b1b}
.error{font-family:ui-monospace,monospace;font-size:.85rem;white-space:pre-wrap;word-break:break-word}
.muted{color:#666}
rect.r-created,rect.r-updated,rect.r-unchanged{fill:#1d7a35}rect.r-failed{fill:#b3261e}
rect.r-held{fill:#7b2d8e}rect.r-other{fill:#888}
@media (max-width:700px){thead{display:none}tr{display:block;padding:.5rem 0}
td{display:block;border:0;padding:.15rem .5rem}}
"""
CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{CSS_HASH}'; img-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render(reader: DatasetReader, settings: Settings, now: datetime, state: str | None) -> str:
    rows = reader.all_health(now)
    system = system_health(settings, broker_url_of(settings), now)
    runs = recent_runs(reader.sessions, CHART_RUNS)
    counts = {name: sum(h.state == name for *_, h in rows) for name in STATES}
    shown = [row for row in rows if state is None or row[-1].state == state]
    body = "".join(_row(key, name, health, runs.get(key, []), now) for key, name, _, _, health in shown)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>datasync status: {escape(system.status)}</title><style>{CSS}</style></head><body>"
        f"<h1>datasync status</h1>{_system(system)}{_filters(counts, state)}"
        "<table><thead><tr><th>dataset</th><th>state</th><th>last success</th><th>next due</th>"
        f"<th>why</th><th>recent runs</th></tr></thead><tbody>{body}</tbody></table>"
        f'<p class="muted">checked {now:%Y-%m-%d %H:%M:%S} UTC; refreshes every {REFRESH_SECONDS} s</p>'
        "</body></html>"
    )


def _system(system: SystemHealth) -> str:
    parts = "".join(
        f'<div class="part s-{c.status}" id="part-{c.name}"><strong>{escape(c.name)}</strong> '
        f"{escape(c.status)} <span>{escape(c.detail)}</span></div>"
        for c in system.components
    )
    queue = f"{system.queue_length} queued" if system.queue_length is not None else "queue unknown"
    return (
        f'<div class="system" id="system" data-status="{escape(system.status)}">'
        f'<div class="part s-{escape(system.status)}"><strong>system</strong> {escape(system.status)} '
        f"<span>{escape(queue)}</span></div>{parts}</div>"
    )


def _filters(counts: dict[str, int], current: str | None) -> str:
    links = ['<a href="/status">all</a>' if current else "<strong>all</strong>"]
    for name in STATES:
        label = f"{name} ({counts[name]})"
        links.append(f"<strong>{label}</strong>" if name == current else f'<a href="/status?state={name}">{label}</a>')
    return f'<p class="filters">{" ".join(links)}</p>'


def _row(key: str, name: str, health: DatasetHealth, runs: list[SyncRun], now: datetime) -> str:
    success = f"{format_age(now - health.last_success_at)} ago" if health.last_success_at else "never"
    due = health.next_due_at
    next_due = "-" if due is None else ("now" if due <= now else f"in {format_age(due - now)}")
    error = ""
    if health.last_error and health.state != "held":
        error = f'<div class="error">{escape(str(health.last_error_kind))}: {escape(health.last_error)}</div>'
    return (
        f'<tr id="ds-{escape(key)}" data-state="{health.state}"><td><strong>{escape(key)}</strong>'
        f'<div class="muted">{escape(name)}</div></td>'
        f'<td><span class="badge s-{health.state}">{health.state}</span></td>'
        f"<td>{escape(success)}</td><td>{escape(next_due)}</td>"
        f"<td>{escape(health.reason)}{error}</td><td>{_chart(runs)}</td></tr>"
    )


def _chart(runs: list[SyncRun]) -> str:
    """One bar per run: colour for the outcome, height for the duration (log scale, 0.1 s to 5 min)."""
    if not runs:
        return '<span class="muted">no runs</span>'
    width, height, bar = CHART_RUNS * 6, 24, 5
    bars = []
    for index, run in enumerate(runs):
        seconds = run.duration_seconds or 0.0
        scaled = (math.log10(max(seconds, 0.1)) + 1) / (math.log10(300) + 1)
        size = max(3, round(height * min(scaled, 1.0)))
        outcome = run.status if run.status in ("created", "updated", "unchanged", "failed", "held") else "other"
        bars.append(
            f'<rect class="r-{outcome}" x="{index * 6}" y="{height - size}" width="{bar}" height="{size}">'
            f"<title>{escape(run.status)}, {seconds:.2f} s</title></rect>"
        )
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="last {len(runs)} runs">{"".join(bars)}</svg>'
    )

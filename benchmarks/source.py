"""What the benchmarks sync: generated pages on a synthetic host, the fixture hosts, catalogues, stores.

The synthetic host serves small NHS-Data-Dictionary-style pages from memory (the local test
upstream, TCP_NODELAY set), with its politeness budget lifted by ``DATASYNC_HOST_LIMITS``, so a
run at 10,000 datasets measures the pipeline and the store, not a website's rate limit.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete

from models.db import get_engine
from models.schema import Base
from tests.upstream import FIXTURES, Upstream
from worker.settings import DEFAULT_CATALOGUE

SYNTHETIC_HOST = "bench.datasync.test"
SYNTHETIC_LIMITS = f"{SYNTHETIC_HOST}=32:1000"
NHS_HOST = "www.datadictionary.nhs.uk"
RCPCH_HOST = "api.rcpch.ac.uk"


@dataclass(frozen=True)
class PageShape:
    """How heavy a generated page is: codes in its list, links in its navigation and Where Used table."""

    codes: int
    navigation: int
    where_used: int


SMALL_PAGE = PageShape(codes=10, navigation=0, where_used=0)  # ~1.5 KB: the scale runs
HEAVY_PAGE = PageShape(codes=50, navigation=150, where_used=60)  # ~20 KB: the CPU-bound thread runs


def page(index: int, shape: PageShape, generation: int = 0) -> bytes:
    """One NHS DD data element page; a new ``generation`` changes its first label."""
    rows = "".join(
        f'<tr class="strow"><td>{code:03d}</td><td><p>Option {code} of '
        f'<a href="../classes/patient.html">PATIENT</a>s list {index}{"." * generation if code == 1 else ""}</p>'
        "</td></tr>"
        for code in range(1, shape.codes + 1)
    )
    where_used = "".join(
        f'<tr><td>Data Set</td><td><a href="../ds/{n}.html">DATA SET {n}</a></td><td>References in</td></tr>'
        for n in range(shape.where_used)
    )
    nav = "".join(f'<li><a href="../data_elements/e{n}.html">ELEMENT {n}</a></li>' for n in range(shape.navigation))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>BENCH {index}</title></head><body>"
        f"<nav><ul>{nav}</ul></nav><main><h1 class='title topictitle1'>BENCH ELEMENT {index}</h1>"
        f"<h2 class='title sectiontitle'>National Codes</h2><table><colgroup><col style='width:20%'/>"
        f"<col style='width:80%'/></colgroup><thead><tr><th>Code</th><th>Description</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><h2 class='title sectiontitle'>Where Used</h2><table><thead><tr>"
        f"<th>Type</th><th>Link</th><th>How used</th></tr></thead><tbody>{where_used}</tbody></table>"
        "</main></body></html>"
    ).encode()


def synthetic_url(index: int) -> str:
    return f"https://{SYNTHETIC_HOST}/data_elements/bench_{index}.html"


def serve_synthetic(upstream: Upstream, datasets: int, shape: PageShape) -> None:
    for index in range(datasets):
        upstream.set_body(synthetic_url(index), page(index, shape))


def change_pages(upstream: Upstream, indexes: range, shape: PageShape, generation: int) -> None:
    for index in indexes:
        upstream.set_body(synthetic_url(index), page(index, shape, generation))


def rewrites(upstream: Upstream) -> str:
    """``DATASYNC_URL_REWRITES`` sending the fixture hosts and the synthetic host to ``upstream``."""
    return f"{upstream.rewrites()},https://{SYNTHETIC_HOST}={upstream.base_url}/{SYNTHETIC_HOST}"


def _block(entry: dict[str, object]) -> str:
    return "[[datasets]]\n" + "".join(f"{name} = {json.dumps(value)}\n" for name, value in entry.items())


def write_synthetic_catalogue(path: Path, datasets: int) -> Path:
    entries = (
        {
            "key": f"bench_{index}",
            "name": f"Bench {index}",
            "category": "nhs_dd",
            "source": "nhs_dd",
            "url": synthetic_url(index),
            "tags": ["bench"],
            "frequency_hours": 168,
        }
        for index in range(datasets)
    )
    path.write_text("\n".join(map(_block, entries)), encoding="utf-8")
    return path


def write_mixed_catalogue(path: Path, nhs_pages: int | None = None, rcpch_lists: int | None = None) -> Path:
    """Issue 11's mixed-host catalogue: every NHS DD fixture page (57) and the shipped RCPCH lists (7)."""
    pages = sorted((FIXTURES / NHS_HOST / "data_elements").glob("*.html"))[:nhs_pages]
    nhs = [
        {
            "key": "nhs_" + re.sub(r"[^a-z0-9_]", "_", page.stem.lower()),
            "name": page.stem,
            "category": "nhs_dd",
            "source": "nhs_dd",
            "url": f"https://{NHS_HOST}/data_elements/{page.name}",
            "tags": ["NHS"],
            "frequency_hours": 168,
        }
        for page in pages
    ]
    shipped = tomllib.loads(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))["datasets"]
    rcpch = [entry for entry in shipped if RCPCH_HOST in entry["url"]][:rcpch_lists]
    path.write_text("\n".join(map(_block, nhs + rcpch)), encoding="utf-8")
    return path


def empty_store(url: str) -> None:
    """Delete every row (the schema stays), so the next sync is a first sync again."""
    with get_engine(url).begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))

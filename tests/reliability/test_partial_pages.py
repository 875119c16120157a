"""Pages that end early but look whole at the HTTP level (an honest Content-Length): never applied."""

from __future__ import annotations

from sqlalchemy import select

from models.schema import Dataset
from tests.conftest import expected_result
from tests.upstream import Upstream
from worker.catalogue import Catalogue
from worker.context import SyncContext
from worker.pipeline import sync_dataset

ETHNIC = "ethnic_category"


def cut_before_row(page: bytes, code: str) -> bytes:
    """``page`` as a server that stopped mid-table sends it: everything before the row of ``code``."""
    cell = page.index(f">{code}<".encode())
    return page[: page.rindex(b"<tr", 0, cell)]


def test_an_nhs_page_that_ends_mid_table_is_never_applied(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    [entry] = catalogue.select([ETHNIC])
    whole = expected_result(ETHNIC)["options"]
    assert sync_dataset(entry, ctx).status == "created"
    page = upstream.body_for(upstream.url_path(entry.url))
    assert page is not None
    upstream.set_body(entry.url, cut_before_row(page, list(whole)[-1]))  # only the last row is missing
    outcome = sync_dataset(entry, ctx, force=True, trigger="manual")
    with ctx.sessions() as session:
        row = session.scalars(select(Dataset).where(Dataset.key == ETHNIC)).one()
    assert (row.version, row.options) == (1, whole)
    assert outcome.status == "failed", outcome

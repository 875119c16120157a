"""NHS DD pages through the real pipeline and local upstream: permitted lists, bad bytes, deep markup."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from models.schema import Dataset
from tests.conftest import expected_result
from tests.fixtures.make_nhs_dd_fixtures import VARIANT_DATASETS, dataset_key
from tests.upstream import Upstream
from worker.catalogue import Catalogue, CatalogueEntry, load_catalogue
from worker.context import SyncContext
from worker.pipeline import sync_dataset


def stored(ctx: SyncContext, key: str) -> Dataset | None:
    with ctx.sessions() as session:
        return session.scalars(select(Dataset).where(Dataset.key == key)).first()


@pytest.fixture
def variants(tmp_path: Path) -> Catalogue:
    entries = "".join(
        f'[[datasets]]\nkey = "{dataset_key(name)}"\nname = "{name}"\ncategory = "nhs_dd"\nsource = "nhs_dd"\n'
        f'url = "{url}"\n\n'
        for name, url in VARIANT_DATASETS
    )
    path = tmp_path / "variants.toml"
    path.write_text(entries, encoding="utf-8")
    return load_catalogue(path)


def test_permitted_national_codes_pages_store_only_the_permitted_list(ctx: SyncContext, variants: Catalogue) -> None:
    assert len(variants.entries) == 9
    for entry in variants.entries:
        outcome = sync_dataset(entry, ctx)
        assert outcome.status == "created", (entry.key, outcome.error)
        row, expected = stored(ctx, entry.key), expected_result(entry.key)
        assert row is not None
        assert list(row.options.items()) == list(expected["options"].items()), entry.key
        assert (row.retired_codes, row.default_codes) == (expected["retired_codes"], expected["default_codes"])


def _resync_with_body(ctx: SyncContext, upstream: Upstream, entry: CatalogueEntry, body: bytes) -> tuple[str, str]:
    assert sync_dataset(entry, ctx).status == "created"
    before = stored(ctx, entry.key)
    upstream.set_body(entry.url, body)
    outcome = sync_dataset(entry, ctx, force=True)
    after = stored(ctx, entry.key)
    assert before is not None and after is not None
    assert (after.options, after.version) == (before.options, before.version), "a failed sync changed the list"
    return outcome.status, f"{outcome.error_kind}: {outcome.error}"


def test_a_label_with_invalid_bytes_fails_the_sync_naming_the_row(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    entry = catalogue.select(["ethnic_category"])[0]
    page = upstream.body_for(upstream.url_path(entry.url))
    assert page is not None and b">White - Irish<" in page
    status, error = _resync_with_body(ctx, upstream, entry, page.replace(b">White - Irish<", b">White - Iri\xe9sh<"))
    assert status == "failed"
    assert error.startswith(
        f"decode: {entry.url}: row 2 (code 'B', label 'White - Iri\ufffdsh') is not valid utf-8 text"
    )


def test_markup_nested_too_deep_fails_with_a_named_error_not_internal(
    ctx: SyncContext, catalogue: Catalogue, upstream: Upstream
) -> None:
    entry = catalogue.select(["ethnic_category"])[0]
    page = upstream.body_for(upstream.url_path(entry.url))
    assert page is not None
    deep = b"<span>" * 5_000 + b"Irish" + b"</span>" * 5_000
    status, error = _resync_with_body(ctx, upstream, entry, page.replace(b">White - Irish<", b">" + deep + b"<"))
    assert status == "failed"
    assert error.startswith(f"too_deep: {entry.url}: the HTML is nested too deeply")

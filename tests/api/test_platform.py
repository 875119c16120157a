"""The HTTP API under the ``checktick`` store profile: datasets read from the platform's ``surveys_dataset``."""

from __future__ import annotations

from api.app import create_app
from tests.api.conftest import ApiServer
from tests.conftest import expected_result
from tests.models.conftest import PlatformStore, platform, platform_ctx  # noqa: F401 (fixtures)
from tests.upstream import Upstream
from worker.catalogue import Catalogue
from worker.context import SyncContext
from worker.pipeline import sync_dataset


def test_the_api_lists_datasets_synced_into_the_platform_table(
    platform: PlatformStore,  # noqa: F811
    platform_ctx: SyncContext,  # noqa: F811
    catalogue: Catalogue,
    upstream: Upstream,
) -> None:
    entry = catalogue.select(["london_boroughs"])[0]
    assert sync_dataset(entry, platform_ctx).status == "created"
    platform.insert(key="our_private_list", name="Ours", options={"A": "Alpha"})
    expected = list(expected_result(entry.key)["options"].items())
    with ApiServer(create_app(platform_ctx.settings, catalogue)) as api:
        listed = api.get("/api/datasets/").json()
        assert [row["key"] for row in listed["results"]] == [entry.key]
        assert listed["results"][0]["options_count"] == len(expected) and listed["results"][0]["parent"] is None
        detail = api.get(f"/api/datasets/{entry.key}/").json()
        assert list(detail["options"].items()) == expected and detail["sync"]["state"] == "ok"
        assert api.get("/api/datasets/our_private_list/").status_code == 404
        assert (
            f'datasync_dataset_options{{category="{entry.category}",dataset="{entry.key}"}}' in api.get("/metrics").text
        )

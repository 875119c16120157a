"""The ``checktick`` store profile: datasets written into the platform's own ``surveys_dataset``."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from models.schema import DatasetVersion
from tests.conftest import expected_result
from tests.models.conftest import PlatformStore
from worker.catalogue import Catalogue
from worker.context import SyncContext
from worker.pipeline import sync_dataset

NOT_NULL = (
    "key name description category source_type reference_url nhs_dd_page_id is_custom external_api_endpoint "
    "external_api_url is_global options format_pattern created_at updated_at version tags snomed_refset_id "
    "snomed_query_type snomed_ecl is_featured is_active"
).split()


def test_smoke(platform: PlatformStore, platform_ctx: SyncContext, catalogue: Catalogue) -> None:
    entry = catalogue.select(["ethnic_category"])[0]
    outcome = sync_dataset(entry, platform_ctx)
    assert outcome.status == "created", outcome.error
    print(platform.rows())

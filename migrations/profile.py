"""Which tables the migrations may create: under the ``checktick`` store profile the datasets live
in the platform's own table, so datasync's migrations never create or alter ``datasets``."""

import os

from alembic import context


def owns_datasets_table() -> bool:
    """``datasync migrate`` says which profile it runs under; the bare alembic CLI reads the environment."""
    profile = context.config.attributes.get("store_profile") or os.environ.get("DATASYNC_STORE_PROFILE", "datasync")
    return bool(profile != "checktick")

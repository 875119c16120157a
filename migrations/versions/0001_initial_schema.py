"""Initial schema: the platform's datasets table and datasync's run, state and version tables.

Under the ``checktick`` store profile ``datasets`` is not created (the platform owns its table).

Revision ID: 0001
Revises:
Create Date: 2026-11-23 10:58:11.486440
"""

import sqlalchemy as sa
from alembic import op

from migrations.profile import owns_datasets_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if owns_datasets_table():
        _create_datasets()

    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_key", sa.String(length=255), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("options_before", sa.Integer(), nullable=True),
        sa.Column("options_after", sa.Integer(), nullable=True),
        sa.Column("codes_added", sa.Integer(), nullable=False),
        sa.Column("codes_removed", sa.Integer(), nullable=False),
        sa.Column("codes_relabelled", sa.Integer(), nullable=False),
        sa.Column("version_after", sa.Integer(), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("error_kind", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("will_retry", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sync_runs_dataset_key"), ["dataset_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_sync_runs_status"), ["status"], unique=False)

    op.create_table(
        "sync_state",
        sa.Column("dataset_key", sa.String(length=255), nullable=False),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("etag", sa.String(length=1000), nullable=True),
        sa.Column("last_modified", sa.String(length=100), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("held_options", sa.JSON(), nullable=True),
        sa.Column("held_retired", sa.JSON(), nullable=True),
        sa.Column("held_defaults", sa.JSON(), nullable=True),
        sa.Column("held_hash", sa.String(length=64), nullable=True),
        sa.Column("held_reason", sa.Text(), nullable=True),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("dataset_key"),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_key", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("retired_codes", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("codes_added", sa.Integer(), nullable=False),
        sa.Column("codes_removed", sa.Integer(), nullable=False),
        sa.Column("codes_relabelled", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_key", "version"),
    )
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_versions_dataset_key"), ["dataset_key"], unique=False)


def _create_datasets() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("source_type", sa.String(length=32), nullable=False),
        sa.Column("is_custom", sa.Boolean(), nullable=False),
        sa.Column("is_global", sa.Boolean(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("organization_id", sa.Integer(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("format_pattern", sa.String(length=100), nullable=True),
        sa.Column("reference_url", sa.String(length=2000), nullable=True),
        sa.Column("external_api_url", sa.String(length=2000), nullable=True),
        sa.Column("sync_frequency_hours", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_scraped", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("retired_codes", sa.JSON(), nullable=False),
        sa.Column("default_codes", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["datasets.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_datasets_category"), ["category"], unique=False)
        batch_op.create_index(batch_op.f("ix_datasets_key"), ["key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_versions_dataset_key"))

    op.drop_table("dataset_versions")
    op.drop_table("sync_state")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_runs_status"))
        batch_op.drop_index(batch_op.f("ix_sync_runs_dataset_key"))

    op.drop_table("sync_runs")
    if owns_datasets_table():
        with op.batch_alter_table("datasets", schema=None) as batch_op:
            batch_op.drop_index(batch_op.f("ix_datasets_key"))
            batch_op.drop_index(batch_op.f("ix_datasets_category"))

        op.drop_table("datasets")

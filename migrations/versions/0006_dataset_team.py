"""Team-owned synced lists: ``datasets.team_id``, as the platform's table has it.

Under the ``checktick`` store profile there is no ``datasets`` table and nothing to do.

Revision ID: 0006
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from migrations.profile import owns_datasets_table

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if owns_datasets_table():
        with op.batch_alter_table("datasets") as batch:
            batch.add_column(sa.Column("team_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    if owns_datasets_table():
        with op.batch_alter_table("datasets") as batch:
            batch.drop_column("team_id")

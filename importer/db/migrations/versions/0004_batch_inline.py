"""batches.inline and batches.inline_sender_until: jobs that carry their file's bytes

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from importer.db.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(
            sa.Column("inline", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("inline_sender_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("inline_sender_until")
        batch.drop_column("inline")

"""signing_keys: the fleet's key ids and fingerprints; rejected_jobs.kind tells replays apart

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from importer.db.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kid"),
    )
    with op.batch_alter_table("rejected_jobs") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="rejected")
        )


def downgrade() -> None:
    with op.batch_alter_table("rejected_jobs") as batch:
        batch.drop_column("kind")
    op.drop_table("signing_keys")

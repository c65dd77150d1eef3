"""watches and watched_files: what `importer watch` has decided, and the batch it is filling

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watches",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("dirs", sa.Text(), nullable=False),
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("batch_opened_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "watched_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "watch",
            sa.String(64),
            sa.ForeignKey("watches.key", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("batch_id", sa.String(32), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_watched_files_watch_path", "watched_files", ["watch", "path"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_watched_files_watch_path", table_name="watched_files")
    op.drop_table("watched_files")
    op.drop_table("watches")

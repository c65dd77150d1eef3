"""searchable PDFs: batches.archive_dir, and each document's archive path (unique)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("archive_dir", sa.Text(), nullable=True))
    with op.batch_alter_table("documents") as documents:
        documents.add_column(sa.Column("archive", sa.Text(), nullable=True))
    op.create_index("ux_documents_archive", "documents", ["archive"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_documents_archive", table_name="documents")
    with op.batch_alter_table("documents") as documents:
        documents.drop_column("archive")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("archive_dir")

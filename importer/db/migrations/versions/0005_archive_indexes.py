"""indexes for an archive of a million documents: status, the reaper, the duplicate check

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_batches_created_at", "batches", ["created_at"])
    # replaces (batch_id, status): the same lookups, and a batch's pages counted from it too
    op.create_index(
        "ix_documents_batch_status_pages", "documents", ["batch_id", "status", "pages_done"]
    )
    op.drop_index("ix_documents_batch_status", table_name="documents")
    op.create_index("ix_documents_batch_id", "documents", ["batch_id", "id"])
    op.create_index("ix_documents_status_enqueued", "documents", ["status", "enqueued_at"])


def downgrade() -> None:
    op.drop_index("ix_documents_status_enqueued", table_name="documents")
    op.drop_index("ix_documents_batch_id", table_name="documents")
    op.create_index("ix_documents_batch_status", "documents", ["batch_id", "status"])
    op.drop_index("ix_documents_batch_status_pages", table_name="documents")
    op.drop_index("ix_batches_created_at", table_name="batches")

"""an index for the next retry due: the supervisor sends a document again when its backoff ends

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_documents_status_next_attempt", "documents", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_documents_status_next_attempt", table_name="documents")

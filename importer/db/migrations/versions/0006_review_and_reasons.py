"""pages.review, a document's page counts by source and its mean confidence, and
documents.error_kind: a short stable code beside the free-text reason

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pages") as batch:
        batch.add_column(
            sa.Column("review", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("error_kind", sa.String(32), nullable=True))
        for name in ("pages_text_layer", "pages_ocr", "pages_review"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("mean_confidence", sa.Float(), nullable=True))
    # what was imported before: its counts from its pages
    for name, where in (
        ("pages_text_layer", "pages.source = 'text-layer'"),
        ("pages_ocr", "pages.source = 'ocr'"),
    ):
        op.execute(
            f"UPDATE documents SET {name} = (SELECT count(*) FROM pages"
            f" WHERE pages.document_id = documents.id AND {where})"
        )
    op.execute(
        "UPDATE documents SET mean_confidence = (SELECT avg(confidence) FROM pages"
        " WHERE pages.document_id = documents.id AND pages.confidence IS NOT NULL)"
    )
    op.create_index("ix_documents_status_error_kind", "documents", ["status", "error_kind"])


def downgrade() -> None:
    op.drop_index("ix_documents_status_error_kind", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        for name in ("mean_confidence", "pages_review", "pages_ocr", "pages_text_layer"):
            batch.drop_column(name)
        batch.drop_column("error_kind")
    with op.batch_alter_table("pages") as batch:
        batch.drop_column("review")

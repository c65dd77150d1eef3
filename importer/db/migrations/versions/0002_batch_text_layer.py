"""batches.text_layer: which pages of a batch keep the PDF's own text

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(
            sa.Column(
                "text_layer",
                sa.Enum("auto", "ocr", "keep", name="textlayermode", native_enum=False, length=16),
                nullable=False,
                server_default="auto",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("text_layer")

"""full-text search over pages.text: FTS5 on SQLite, a tsvector with a GIN index on
PostgreSQL, kept by triggers; the pages already imported are indexed

Revision ID: 0007
Revises: 0006
"""

from alembic import op

from importer.db import page_search_ddl

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    page_search_ddl.create(op.get_bind())


def downgrade() -> None:
    page_search_ddl.drop(op.get_bind())

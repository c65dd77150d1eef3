"""The schema: migrations applied on first use, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from importer.db.engine import SCHEMA_REVISION, _alembic_config, current_revision, open_database


def test_schema_revision_is_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(_alembic_config()).get_current_head() == SCHEMA_REVISION


def test_first_use_creates_the_schema(database_url: str) -> None:
    db = open_database(database_url)
    with db.engine.connect() as conn:
        assert current_revision(conn) == SCHEMA_REVISION
    tables = set(inspect(db.engine).get_table_names())
    assert {"batches", "documents", "pages", "outbox", "rejected_jobs"} <= tables
    open_database(database_url)  # a second start finds it current and changes nothing
    if db.dialect == "sqlite":
        with db.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"

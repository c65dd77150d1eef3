"""The dashboard's database connections refuse writes.

The dashboard only reads; making its connections read-only turns a mistaken write into
an error instead of a change: SQLite's `query_only`, PostgreSQL's read-only default
transactions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from importer.db.engine import Database


def make_read_only(db: Database) -> Database:
    """Every connection `db` opens from now on refuses to write; open ones are closed."""

    @event.listens_for(db.engine, "connect")
    def _read_only(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if db.dialect == "sqlite":
            cur.execute("PRAGMA query_only = ON")
        else:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cur.close()
        if db.dialect != "sqlite":
            dbapi_conn.commit()

    db.engine.dispose()
    return db

"""The full-text index over pages.text, in one place for a fresh schema and migration 0007.

SQLite: `pages_fts`, an FTS5 table with external content (`content='pages'`), kept by
triggers on pages, so the index changes in the transaction that stores the pages (a
replayed job's DELETE + INSERT by number included). External content rather than
contentless: the text is stored once, in pages; and `pages` has no INTEGER PRIMARY KEY,
so its rowids (which the index names) may be renumbered by a VACUUM: an external-content
index is rebuilt from pages alone (`rebuild()`), which a contentless one cannot be.
Tokenizer `unicode61 remove_diacritics 2`: "cafe" finds "café", "muller" finds "Müller".

PostgreSQL: `pages.search_vector` (a tsvector, not in the models: only PostgreSQL has it)
filled by a trigger, with a GIN index. The trigger folds diacritics with `unaccent`, which
is not immutable, so a generated column cannot call it. Configuration 'simple': pages come
in many languages, and a language's stemmer and stop words would mangle the others (the
English 'english' drops "die", the German article); no stemming also matches SQLite's
tokenizer, so both databases find the same pages. A tsvector holds at most 1 MB: a page's
first INDEXED_CHARS characters are indexed.

Every object is created by `create()` and removed by `drop()`; a later migration that
rebuilds the pages table (SQLite's batch mode copies it) drops them first and creates them
after, which indexes the copied rows again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

FTS_TABLE = "pages_fts"
VECTOR = "search_vector"
FOLD = "pages_search_fold"
INDEXED_CHARS = 100_000

_SQLITE_CREATE = (
    f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(text, content='pages',"
    " content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER pages_fts_insert AFTER INSERT ON pages BEGIN"
    f" INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.rowid, new.text); END",
    f"CREATE TRIGGER pages_fts_delete AFTER DELETE ON pages BEGIN"
    f" INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.rowid, old.text);"
    " END",
    f"CREATE TRIGGER pages_fts_update AFTER UPDATE ON pages"
    " WHEN old.text IS NOT new.text OR old.rowid IS NOT new.rowid BEGIN"
    f" INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.rowid, old.text);"
    f" INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.rowid, new.text); END",
)
_SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS pages_fts_update",
    "DROP TRIGGER IF EXISTS pages_fts_delete",
    "DROP TRIGGER IF EXISTS pages_fts_insert",
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
)

_PG_DROP = (
    "DROP TRIGGER IF EXISTS pages_search_vector ON pages",
    "DROP FUNCTION IF EXISTS pages_search_vector()",
    "DROP INDEX IF EXISTS ix_pages_search_vector",
    f"ALTER TABLE pages DROP COLUMN IF EXISTS {VECTOR}",
    f"DROP FUNCTION IF EXISTS {FOLD}(text)",
)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pg_create(conn: Any) -> None:
    conn.execute(text("CREATE EXTENSION IF NOT EXISTS unaccent"))
    schema = conn.execute(
        text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = 'unaccent'"
        )
    ).scalar_one()
    where = _quoted(schema)
    dictionary = f"{where}.unaccent".replace("'", "''")
    # the extension's schema named, so that a session's search_path cannot change what
    # a page is folded with; the same function folds the queries (importer.search)
    conn.execute(
        text(
            f"CREATE FUNCTION {FOLD}(text) RETURNS text LANGUAGE sql STABLE STRICT"
            f" PARALLEL SAFE AS $$ SELECT {where}.unaccent('{dictionary}'::regdictionary, $1) $$"
        )
    )
    conn.execute(text(f"ALTER TABLE pages ADD COLUMN {VECTOR} tsvector"))
    conn.execute(
        text(
            "CREATE FUNCTION pages_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN NEW.{VECTOR} := to_tsvector('simple', {FOLD}(left(NEW.text,"
            f" {INDEXED_CHARS}))); RETURN NEW; END $$"
        )
    )
    conn.execute(
        text(
            "CREATE TRIGGER pages_search_vector BEFORE INSERT OR UPDATE OF text ON pages"
            " FOR EACH ROW EXECUTE FUNCTION pages_search_vector()"
        )
    )
    conn.execute(
        text(
            f"UPDATE pages SET {VECTOR} = to_tsvector('simple',"
            f" {FOLD}(left(text, {INDEXED_CHARS})))"
        )
    )
    conn.execute(text(f"CREATE INDEX ix_pages_search_vector ON pages USING gin ({VECTOR})"))


def create(conn: Any) -> None:
    """Create the index and its triggers on this connection's database, and index the
    pages already there."""
    if conn.dialect.name == "sqlite":
        for statement in _SQLITE_CREATE:
            conn.execute(text(statement))
        rebuild(conn)
    else:
        _pg_create(conn)


def rebuild(conn: Any) -> None:
    """SQLite: index every page again from pages (after a VACUUM renumbered rowids)."""
    conn.execute(text(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')"))


def drop(conn: Any) -> None:
    """Remove every object `create` made (the unaccent extension stays: others may use it)."""
    for statement in _SQLITE_DROP if conn.dialect.name == "sqlite" else _PG_DROP:
        conn.execute(text(statement))

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


def test_a_fresh_schema_is_the_one_the_migrations_build(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An empty database is created from the models (no alembic at start-up); an older one
    is migrated. Both must end with the same tables, columns, keys and indexes."""
    from alembic import command

    from importer.db.engine import Database

    fresh = open_database(database_url)
    if fresh.dialect == "sqlite":
        migrated_url = f"sqlite:///{tmp_path / 'migrated.db'}"
    else:
        migrated_url = database_url.rsplit("/", 1)[0] + "/" + database_url.rsplit("/", 1)[1]
        with fresh.engine.begin() as conn:  # the same server, a schema of its own
            conn.execute(text("CREATE SCHEMA migrated"))
        migrated_url += "?options=-csearch_path%3Dmigrated"
    migrated = Database(migrated_url)
    with migrated.engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    assert describe(fresh) == describe(migrated)
    assert describe(fresh)["alembic_version"]
    names = {row[1] for row in search_objects(fresh)}
    if fresh.dialect == "sqlite":
        assert {"pages_fts", "pages_fts_insert", "pages_fts_delete", "pages_fts_update"} <= names
    else:
        assert {"pages_search_vector", "pages_search_fold", "ix_pages_search_vector"} <= names


def describe(db) -> dict[str, object]:  # type: ignore[no-untyped-def]
    found = inspect(db.engine)
    out: dict[str, object] = {}
    for table in sorted(found.get_table_names()):
        columns = [
            (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
            for c in found.get_columns(table)
        ]
        keys = found.get_pk_constraint(table)["constrained_columns"]
        foreign = sorted(
            (tuple(f["constrained_columns"]), f["referred_table"])
            for f in found.get_foreign_keys(table)
        )
        indexes = sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in found.get_indexes(table)
        )
        uniques = sorted(tuple(u["column_names"]) for u in found.get_unique_constraints(table))
        out[table] = (sorted(columns), keys, foreign, indexes, uniques)
    out["search objects"] = search_objects(db)
    return out


def search_objects(db) -> list[tuple[str, ...]]:  # type: ignore[no-untyped-def]
    """What the inspector does not show: triggers, the FTS5 table's definition, functions,
    and each index's definition (its method: GIN)."""
    if db.dialect == "sqlite":
        query = (
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
            " WHERE type IN ('trigger', 'index') OR sql LIKE 'CREATE VIRTUAL TABLE%'"
        )
    else:
        query = (
            "SELECT 'trigger', t.tgname, c.relname,"
            " replace(pg_get_triggerdef(t.oid), current_schema() || '.', '') FROM pg_trigger t"
            " JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
            " AND c.relnamespace = current_schema()::regnamespace"
            " UNION ALL SELECT 'function', p.proname, p.provolatile::text, p.prosrc FROM pg_proc p"
            " WHERE p.pronamespace = current_schema()::regnamespace AND NOT EXISTS"
            " (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
            " UNION ALL SELECT 'index', indexname, tablename,"
            " replace(indexdef, schemaname || '.', '') FROM pg_indexes"
            " WHERE schemaname = current_schema()"
        )
    with db.engine.connect() as conn:
        return sorted(tuple(str(v) for v in row) for row in conn.execute(text(query)))

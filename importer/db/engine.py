"""Engines and sessions, SQLite tuned for several worker processes, migrations on first use."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from importer.errors import ConfigError, DatabaseUnavailable

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_MS = 60_000
# The newest migration. Checked with one SELECT so that a process whose schema is current
# never imports alembic (a sixth of `importer run`'s start-up); a test keeps it in step.
SCHEMA_REVISION = "0010"


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def current_revision(conn: Any) -> str | None:
    try:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()  # type: ignore[no-any-return]
    except (OperationalError, ProgrammingError):
        conn.rollback()
        return None


def _sqlite_setup(engine: Engine) -> None:
    """WAL + busy timeout so many processes share one file; explicit BEGIN for real locking.

    pysqlite's own transaction handling defers BEGIN and cannot take the write lock up
    front; `immediate=True` in a connection's execution options makes its transaction
    BEGIN IMMEDIATE, which is how claims serialize on SQLite.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """One engine and its session factory, built in main() and handed to collaborators."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as e:
            raise ConfigError(
                f"IMPORTER_DATABASE_URL {url!r} is not a database URL "
                "(examples: sqlite:///importer.db, postgresql+psycopg://user@host/db)"
            ) from e
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"future": True}
        if self.dialect == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_MS / 1000, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            self.engine = create_engine(url, **kwargs)
        except (ArgumentError, ModuleNotFoundError) as e:
            raise ConfigError(f"IMPORTER_DATABASE_URL {url!r} cannot be used: {e}") from e
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        if immediate and self.dialect == "sqlite":
            with self.engine.connect() as conn:
                conn = conn.execution_options(immediate=True)
                with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                    yield session
            return
        with self.sessions.begin() as session:
            yield session

    def check(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as e:
            raise DatabaseUnavailable(
                f"database {self.safe_url} is unreachable ({_first_line(e)}): start it, or fix "
                "IMPORTER_DATABASE_URL"
            ) from e

    def migrate(self) -> None:
        """Bring the schema to the newest revision; safe when several processes start at once."""
        head = SCHEMA_REVISION
        try:
            with self.engine.connect() as conn:
                if current_revision(conn) == head:
                    return
            with self._migration_lock(), self.engine.begin() as conn:
                if self._create_fresh(conn):
                    return
            from alembic import command
            from alembic.runtime.migration import MigrationContext

            with self._migration_lock(), self.engine.begin() as conn:
                if MigrationContext.configure(conn).get_current_revision() == head:
                    return
                cfg = _alembic_config()
                cfg.attributes["connection"] = conn
                log.info("migrating %s to %s", self.safe_url, head)
                command.upgrade(cfg, "head")
        except OperationalError as e:
            raise DatabaseUnavailable(
                f"database {self.safe_url} is unreachable ({_first_line(e)}): start it, or fix "
                "IMPORTER_DATABASE_URL"
            ) from e

    def _create_fresh(self, conn: Any) -> bool:
        """An empty database gets the newest schema from the models at once, stamped with
        its revision, without importing alembic (a test keeps the two schemas equal)."""
        from importer.db import page_search_ddl
        from importer.db.models import Base

        found = inspect(conn)
        if found.has_table("alembic_version") or found.has_table("batches"):
            return False
        log.info("creating the schema of %s at %s", self.safe_url, SCHEMA_REVISION)
        Base.metadata.create_all(conn)
        page_search_ddl.create(conn)
        conn.execute(
            text(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL,"
                " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        conn.execute(
            text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": SCHEMA_REVISION}
        )
        return True

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.dialect == "sqlite":
            db_path = make_url(self.url).database or ":memory:"
            if db_path == ":memory:":
                yield
                return
            fd = os.open(db_path + ".migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)
        else:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(740301)"))
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(740301)"))
                    conn.commit()


def _first_line(error: Exception) -> str:
    orig = getattr(error, "orig", None) or error
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def open_database(url: str, *, migrate: bool = True) -> Database:
    db = Database(url)
    db.check()
    if migrate:
        db.migrate()
    return db

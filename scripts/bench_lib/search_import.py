"""Search: what the full-text index costs a real import.

The bench's born-digital documents (text-layer pages: the cheapest to read, so the index's
share of an import is the largest) imported with `importer run`, the same workers and the
same files, into (a) a fresh database with the index and (b) a fresh database whose
schema is the same but for the triggers that keep the index (`without_index`), in
alternating rounds. Each run is timed as the text-layer section times one (gearmand's
start included); afterwards `importer.search` must find a word of the corpus in (a) and
nothing in (b), or the run does not count.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench_lib import goals
from bench_lib.contenders import fresh_dir, timed_run
from bench_lib.corpus import Doc
from bench_lib.procs import BenchError
from bench_lib.results import Row, SectionResult, ratio_goal
from importer.db.engine import open_database
from importer.keyring import new_key
from importer.search import search

log = logging.getLogger(__name__)

ROUNDS, ROUNDS_QUICK = 4, 1
WITH, WITHOUT = "importer run, with the index", "importer run, without the index"
PG_DATABASE = "importer_bench_search_import"

# the triggers that fill the index as pages are stored; the index objects themselves stay
_TRIGGERS = {
    "sqlite": ("pages_fts_insert", "pages_fts_delete", "pages_fts_update"),
    "postgresql": ("pages_search_vector",),
}


def without_index(conn: Any) -> None:
    """Drop the triggers that keep the full-text index: pages are stored as before 0007."""
    dialect = conn.dialect.name
    for name in _TRIGGERS[dialect]:
        on = "" if dialect == "sqlite" else " ON pages"
        conn.execute(text(f"DROP TRIGGER {name}{on}"))


def _probe(docs: Sequence[Doc]) -> str:
    """A word of the corpus for the check: the first document's longest."""
    return max(re.findall(r"[^\W\d_]+", docs[0].expected), key=len)


def _fresh_database(dialect: str, data: Path, admin_url: str) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{data / 'importer.db'}"
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=PG_DATABASE)
    return url.render_as_string(hide_password=False)


def _one_import(
    docs: Sequence[Doc], work: Path, workers: int, dialect: str, indexed: bool, admin_url: str
) -> float:
    """Seconds `importer run` took on a fresh database, with the index or without it."""
    data = fresh_dir(work / f"search-import-{dialect}")
    url = _fresh_database(dialect, data, admin_url)
    db = open_database(url)
    if not indexed:
        with db.engine.begin() as conn:
            without_index(conn)
    db.engine.dispose()
    extra = {"IMPORTER_DATABASE_URL": url, "IMPORTER_SECRET_KEYS": new_key()}
    seconds, _, _ = timed_run(docs[0].path.parent, docs, data, workers, env=extra)
    db = open_database(url, migrate=False)
    found = len(search(db, _probe(docs), limit=5))
    db.engine.dispose()
    if bool(found) != indexed:
        state = "with" if indexed else "without"
        raise BenchError(f"{dialect}: a search after the import {state} the index found {found}")
    return seconds


def real_imports(
    name: str, docs: Sequence[Doc], work: Path, workers: int, rounds: int, admin_url: str
) -> SectionResult:
    """(a) and (b) in alternating rounds; the rows, and the goal on the ratio of medians."""
    dialect = "sqlite" if name == "SQLite" else "postgresql"
    seconds: dict[str, list[float]] = {WITH: [], WITHOUT: []}
    try:
        for round_number in range(rounds):
            order = (WITH, WITHOUT) if round_number % 2 == 0 else (WITHOUT, WITH)
            for label in order:
                took = _one_import(docs, work, workers, dialect, label == WITH, admin_url)
                seconds[label].append(took)
                log.info("search import %s round %d/%d: %s %.2f s", name, round_number + 1,
                         rounds, label, took)  # fmt: skip
    finally:
        if dialect == "postgresql":
            _drop_database(admin_url)
    pages = sum(d.pages for d in docs)
    section = f"search, importer run on {len(docs)} born-digital docs ({pages} pages), {name}"
    result = SectionResult()
    medians = {label: statistics.median(s) for label, s in seconds.items()}
    for label, each in seconds.items():
        result.rows.append(
            Row(section, f"{label}, {workers} workers", ", ".join(f"{s:.2f}" for s in each),
                f"{medians[label]:.2f} s", f"{pages / medians[label]:,.0f} pages/s", "")
        )  # fmt: skip
    ratio = medians[WITH] / medians[WITHOUT]
    added = (medians[WITH] - medians[WITHOUT]) / pages * 1000
    paired = ", ".join(f"{a / b:.2f}" for a, b in zip(seconds[WITH], seconds[WITHOUT], strict=True))
    result.notes.append(
        f"Search, {name}: `importer run` on {pages} text-layer pages took {ratio:.2f} times as"
        f" long with the full-text index as without it ({added:+.2f} ms a page; medians of"
        f" {rounds} alternating rounds, each on a fresh database; round by round {paired})."
    )
    figure = goals.SEARCH_IMPORT[name]
    result.goals.append(ratio_goal(figure, ratio, goals.TARGETS[figure][0], at_most=True))
    return result


def _drop_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')

"""Search: `importer.search.search` over PAGES generated pages (`search_pages`), on SQLite
and on PostgreSQL, against today's substring scan (`Page.text.icontains`, every term) on
the same rows, and what the index costs an import.

Each dialect gets two databases, one with the full-text objects and one without them
(`page_search_ddl.drop`); the same pages go into both through the workers' calls, a
hundred documents at a time to each in turn, timed apart: the ratio is the index's cost
to the database part of an import alone. Then each query runs QUERY_ROUNDS times (p50,
p95), the substring scan SCAN_ROUNDS times. The goal on the import's cost is judged on
real imports of the bench's born-digital corpus (`search_import`).
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import and_, func, select, text
from sqlalchemy.engine import make_url

from bench_lib import goals
from bench_lib.corpus import QUICK, Doc, Sizes, load_or_build
from bench_lib.results import Row, SectionResult, ratio_goal
from bench_lib.scale import PG_ADMIN, postgresql_refusal
from bench_lib.search_import import ROUNDS, ROUNDS_QUICK, real_imports
from bench_lib.search_pages import PAGES_PER_DOCUMENT, PHRASE, RARE_WORD, Corpus, documents, store
from importer.db import page_search_ddl
from importer.db.engine import Database, open_database
from importer.db.models import Document, Page
from importer.search import parse, search

log = logging.getLogger(__name__)

PAGES, PAGES_QUICK = 100_000, 1_000
QUERY_ROUNDS, QUERY_ROUNDS_QUICK = 40, 5
SCAN_ROUNDS, SCAN_ROUNDS_QUICK = 3, 1
TURN = 100  # documents stored into one database before the other's turn


def queries(corpus: Corpus) -> dict[str, str]:
    return {
        "a rare word": RARE_WORD,
        "a frequent word": corpus.words[100],
        "two words": f"{corpus.words[50]} {corpus.words[400]}",
        "a phrase": f'"{PHRASE}"',
    }


@contextmanager
def _databases(dialect: str, work: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases: (with the index, without it)."""
    names = ("importer_bench_search_fts", "importer_bench_search_plain")
    if dialect == "sqlite":
        folder = work / "search-sqlite"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            yield f"sqlite:///{folder / names[0]}.db", f"sqlite:///{folder / names[1]}.db"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import psycopg

    def recreate(create: bool) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                if create:
                    admin.execute(f'CREATE DATABASE "{name}"')

    recreate(True)
    base = make_url(PG_ADMIN).set(drivername="postgresql+psycopg")
    urls = [base.set(database=n).render_as_string(hide_password=False) for n in names]
    try:
        yield urls[0], urls[1]
    finally:
        recreate(False)


def _fill(indexed: Database, plain: Database, pages: int, corpus: Corpus) -> tuple[float, float]:
    """The same pages into both; seconds spent storing into each."""
    count = max(pages // PAGES_PER_DOCUMENT, 1)
    ids = {db.url: documents(db, count) for db in (indexed, plain)}
    spent = {indexed.url: 0.0, plain.url: 0.0}
    for turn, first in enumerate(range(0, count, TURN)):
        chunk = range(first, min(first + TURN, count))
        texts = [
            [corpus.page(d * PAGES_PER_DOCUMENT + p) for p in range(PAGES_PER_DOCUMENT)]
            for d in chunk
        ]
        order = (indexed, plain) if turn % 2 == 0 else (plain, indexed)
        for db in order:
            started = time.perf_counter()
            for d, doc_texts in zip(chunk, texts, strict=True):
                store(db, ids[db.url][d], doc_texts)
            spent[db.url] += time.perf_counter() - started
        if turn % 20 == 0:
            log.info("search: %s, %d of %d documents stored", indexed.dialect, first, count)
    return spent[indexed.url], spent[plain.url]


def _scan(db: Database, query: str) -> Callable[[], int]:
    """Today's search: every term a case-insensitive substring, in path order."""
    terms = [t.raw for t in parse(query)]
    statement = (
        select(Document.path, Document.batch_id, Page.number, Page.text)
        .join(Page)
        .where(and_(*(Page.text.icontains(t, autoescape=True) for t in terms)))
        .order_by(Document.path, Page.number)
        .limit(20)
    )

    def call() -> int:
        with db.session() as s:
            return len(s.execute(statement).all())

    return call


def _searching(db: Database, query: str) -> Callable[[], int]:
    def call() -> int:
        return len(search(db, query, limit=20))

    return call


def _timed(call: Callable[[], int], rounds: int) -> tuple[list[float], int]:
    seconds, found = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        found = call()
        seconds.append(time.perf_counter() - started)
    return seconds, found


def _p(seconds: list[float], share: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _matching(db: Database, query: str) -> int:
    """How many pages hold the query (from the index), for the report."""
    terms = [t.raw for t in parse(query)]
    if db.dialect == "sqlite":
        match = " AND ".join(f'"{t}"' for t in terms)
        sql, params = "SELECT count(*) FROM pages_fts WHERE pages_fts MATCH :m", {"m": match}
    else:
        tsquery = " && ".join(
            f"phraseto_tsquery('simple', pages_search_fold(:t{i}))" for i in range(len(terms))
        )
        sql = f"SELECT count(*) FROM pages WHERE search_vector @@ ({tsquery})"
        params = {f"t{i}": t for i, t in enumerate(terms)}
    with db.engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def _analyze(db: Database) -> None:
    """PostgreSQL's statistics as autovacuum leaves them after a large insert."""
    if db.dialect == "postgresql":
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


def _one_dialect(
    name: str, work: Path, pages: int, quick: bool, born: list[Doc], result: SectionResult
) -> None:
    corpus = Corpus.build()
    dialect = "sqlite" if name == "SQLite" else "postgresql"
    with _databases(dialect, work) as (indexed_url, plain_url):
        indexed, plain = open_database(indexed_url), open_database(plain_url)
        with plain.engine.begin() as conn:
            page_search_ddl.drop(conn)
        with_index, without = _fill(indexed, plain, pages, corpus)
        for db in (indexed, plain):
            _analyze(db)
        with indexed.engine.connect() as conn:
            stored = int(conn.execute(select(func.count()).select_from(Page)).scalar_one())
        section = f"search, {stored:,} pages, {name}"
        for label, took in (("with", with_index), ("without", without)):
            result.rows.append(
                Row(section, f"storing the pages, {label} the index (database part only)",
                    f"{took:.2f}", f"{took:.2f} s", f"{stored / took:,.0f} pages/s", "")
            )  # fmt: skip
        result.notes.append(
            f"Search, {name}, the database part of an import alone (claim, flush and finish"
            f" of 10-page documents: no PDF read, no OCR): {with_index / without:.2f} times as"
            f" long with the full-text index, {(with_index - without) / stored * 1000:.2f} ms"
            " more a page."
        )
        rounds = QUERY_ROUNDS_QUICK if quick else QUERY_ROUNDS
        scans = SCAN_ROUNDS_QUICK if quick else SCAN_ROUNDS
        slowest = 0.0
        for label, query in queries(corpus).items():
            fast, hits = _timed(_searching(indexed, query), rounds)
            slow, _ = _timed(_scan(plain, query), scans)
            p50, p95 = _p(fast, 0.5), _p(fast, 0.95)
            slowest = max(slowest, p95)
            holding = _matching(indexed, query)
            scan50 = statistics.median(slow)
            result.rows.append(
                Row(section, f"full-text, {label}: {query}", f"{rounds} rounds",
                    f"{p50 * 1000:.1f} ms", f"p95 {p95 * 1000:.1f} ms",
                    f"{holding:,} pages hold it ({holding / stored:.2%}), {hits} shown;"
                    f" {scan50 / p50:,.0f}x faster than the substring scan (p50)")
            )  # fmt: skip
            result.rows.append(
                Row(section, f"substring scan, {label}: {query}",
                    ", ".join(f"{s:.3f}" for s in slow), f"{scan50 * 1000:.1f} ms",
                    f"p95 {_p(slow, 0.95) * 1000:.1f} ms", "")
            )  # fmt: skip
        target = goals.TARGETS[goals.SEARCH_P95[name]][0]
        result.goals.append(
            ratio_goal(goals.SEARCH_P95[name], slowest * 1000, target, at_most=True)
        )
        for db in (indexed, plain):
            db.engine.dispose()
    rounds = ROUNDS_QUICK if quick else ROUNDS
    workers = os.cpu_count() or 1
    result.extend(real_imports(name, born, work / "runs", workers, rounds, PG_ADMIN))


def search_section(work: Path, quick: bool, pages: int | None = None) -> SectionResult:
    count = pages or (PAGES_QUICK if quick else PAGES)
    born = load_or_build(work, QUICK if quick else Sizes()).born
    result = SectionResult()
    _one_dialect("SQLite", work, count, quick, born, result)
    refusal = postgresql_refusal()
    if refusal:
        result.notes.append(f"Search on PostgreSQL left out: {refusal}.")
        return result
    _one_dialect("PostgreSQL", work, count, quick, born, result)
    result.notes.append(
        f"Search: pages of {len(Corpus.build().page(0).split())} words drawn from a Zipf-like"
        f" vocabulary; stored {PAGES_PER_DOCUMENT} pages to a document, half with a flush and"
        " half with the finish, as a worker stores a text-layer document."
    )
    return result

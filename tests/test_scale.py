"""An archive's worth of documents: `status BATCH` lists the first N of them and says how
many there are, and every query of `status`, of a reaper pass and of submit's duplicate
check is answered through an index, never by reading all documents.

The rows come from the benchmark's generator (`scripts/bench_lib/scale_rows.py`), a few
thousand of them; the benchmark's scale section times the same calls at a million. No
timing is asserted here: a plan that reads every document is what grows with an archive.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from importer.db.engine import Database, open_database
from importer.db.lifecycle import _LEFT
from importer.gearman.client import GearmanIO
from importer.requeue import requeue_stale
from importer.status import documents, overview
from importer.submit import Candidate, SubmitOptions, SubmitResult, _classify
from tests.conftest import ROOT, importer

ROWS = 15_000  # one batch of 3,000 (a fifth), twelve of 1,000

if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from bench_lib.scale_rows import Archive, fill, sha256_of  # noqa: E402


@pytest.fixture
def archive_db(database_url: str) -> tuple[Database, Archive]:
    db = open_database(database_url)
    return db, fill(db, ROWS)


# status BATCH: the first N documents, and how many there are -----------------------------


def status_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    return json.loads(importer("status", *args, "--json", env=env, check=True).stdout)  # type: ignore[no-any-return]


def test_status_of_a_batch_lists_the_first_n_documents_and_counts_them_all(
    archive_db: tuple[Database, Archive], database_url: str, env: dict[str, str]
) -> None:
    db, archive = archive_db
    env = {**env, "IMPORTER_DATABASE_URL": database_url}
    big, total = archive.big_batch, archive.big_documents
    assert total == 3000
    paths = [f"/archive/{big}/{k:07d}.pdf" for k in range(total)]  # submitted in this order

    body = status_json(env, big)  # default: the first 1,000
    assert [b["id"] for b in body["batches"]] == [big]
    assert body["batches"][0]["total"] == total and body["documents_total"] == total
    assert [d["path"] for d in body["documents"]] == paths[:1000]
    assert list(body)[-2:] == ["documents", "documents_total"]

    body = status_json(env, big, "--limit", "150")
    assert [d["path"] for d in body["documents"]] == paths[:150]
    assert body["documents_total"] == total

    body = status_json(env, big, "--all")
    assert [d["path"] for d in body["documents"]] == paths
    assert body["documents_total"] == total

    body = status_json(env)  # no batch: neither key
    assert "documents" not in body and "documents_total" not in body
    assert len(body["batches"]) == archive.batches

    table = importer("status", big, "--limit", "10", env=env, check=True).stdout
    assert paths[9] in table and paths[10] not in table
    assert "… and 2,990 more; --all for every one" in table
    table = importer("status", big, "--all", env=env, check=True).stdout
    assert paths[-1] in table and "more; --all" not in table

    refused = importer("status", big, "--limit", "5", "--all", env=env)
    assert refused.returncode == 2 and "--limit and --all" in refused.stderr


def test_documents_limit_and_total_in_process(archive_db: tuple[Database, Archive]) -> None:
    db, archive = archive_db
    listed = documents(db, archive.big_batch, None, limit=7)
    assert [d.path.rsplit("/", 1)[1] for d in listed] == [f"{k:07d}.pdf" for k in range(7)]
    assert len(documents(db, archive.big_batch, None)) == archive.big_documents
    (batch,) = overview(db, archive.big_batch).batches
    assert batch.total == archive.big_documents
    assert batch.queued + batch.running + batch.done + batch.failed == batch.total


# every query through an index ----------------------------------------------------------


@contextmanager
def statements(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT, UPDATE and DELETE statements run on `db`, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(  # type: ignore[no-untyped-def]
        conn, cursor, statement: str, parameters: Any, context, executemany: bool
    ) -> None:
        if not executemany and statement.lstrip().upper().startswith(
            ("SELECT", "UPDATE", "DELETE")
        ):
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def plan(db: Database, statement: str, parameters: Any) -> str:
    """The query plan. SQLite's as the importer leaves it (no ANALYZE: the planner goes by
    the indexes). PostgreSQL's with sequential scans priced out, so that a table read
    whole means that no index could serve: on a few thousand rows a table scan may be
    the cheaper plan, and the benchmark shows what the planner picks at a million."""
    with db.engine.connect() as conn:
        if db.dialect == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return "\n".join(str(row[-1]) for row in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        conn.rollback()
        return "\n".join(str(row[0]) for row in rows)


def plans_of(db: Database, call: Callable[[], object]) -> list[str]:
    with statements(db) as seen:
        call()
    return [plan(db, statement, parameters) for statement, parameters in seen]


def reads_all_documents(text: str) -> bool:
    return bool(re.search(r"\bSCAN documents\b|Seq Scan on documents", text))


def indexes(plans: list[str]) -> set[str]:
    return {name for text in plans for name in re.findall(r"\bix_\w+", text)}


def assert_indexed(plans: list[str], expected: set[str], *, only: bool = False) -> None:
    shown = "\n---\n".join(plans)
    assert plans, "no statement was run"
    assert not any(reads_all_documents(text) for text in plans), shown
    assert expected <= indexes(plans), shown
    if only:
        assert indexes(plans) <= expected, shown


def test_status_reads_only_the_batches_it_shows(archive_db: tuple[Database, Archive]) -> None:
    db, archive = archive_db
    plans = plans_of(db, lambda: overview(db))
    assert_indexed(plans, {"ix_batches_created_at", "ix_documents_batch_status_pages"})
    if db.dialect == "sqlite":  # the newest batches come in index order, not sorted
        assert "COVERING INDEX ix_documents_batch_status_pages" in "\n".join(plans)
        assert not any("TEMP B-TREE FOR ORDER BY" in text for text in plans), plans
    plans = plans_of(db, lambda: overview(db, archive.big_batch))
    assert_indexed(plans, {"ix_documents_batch_status_pages"})


def test_status_of_a_batch_reads_only_the_documents_it_lists(
    archive_db: tuple[Database, Archive],
) -> None:
    db, archive = archive_db
    plans = plans_of(db, lambda: documents(db, archive.big_batch, None, limit=100))
    assert_indexed(plans, {"ix_documents_batch_id"}, only=True)
    # not the primary key walked in order and filtered by batch: that reads every older
    # batch's documents before this one's
    assert not any(re.search(r"documents_pkey[^\n]*\n\s*Filter: [^\n]*batch_id", t) for t in plans)


def test_a_reaper_pass_reads_only_what_it_requeues(
    archive_db: tuple[Database, Archive], gearmand: Any
) -> None:
    """Against a running gearmand that holds no job: the documents sent long ago are
    asked about, found lost, and sent again with the rest."""
    db, _ = archive_db
    keyring = [("k1", secrets.token_bytes(32))]
    with GearmanIO([gearmand.address]) as gio:
        plans = plans_of(db, lambda: requeue_stale(db, gio, keyring, max_attempts=3))
        again = requeue_stale(db, gio, keyring, max_attempts=3)
    assert_indexed(plans, {"ix_documents_status_enqueued", "ix_documents_status_lease"})
    assert again.enqueued == 0  # the first pass sent every one


def test_the_duplicate_check_looks_up_hashes_only(archive_db: tuple[Database, Archive]) -> None:
    """Not "done or in this batch": that reads the whole batch for every group of files."""
    db, archive = archive_db
    group = [
        Candidate(path=f"/in/{n}.pdf", size=600, sha256=sha256_of(n * 7), is_pdf=True)
        for n in range(300)
    ] + [Candidate(path="/in/new.pdf", size=600, sha256=sha256_of(ROWS + 1), is_pdf=True)]
    result = SubmitResult(batch_id=archive.big_batch)
    opts = SubmitOptions(email="ops@example.com")
    kept: list[Candidate] = []

    def check() -> None:
        kept[:] = _classify(db, list(group), opts, result, batch_id=archive.big_batch)

    plans = plans_of(db, check)
    assert_indexed(plans, {"ix_documents_sha256_status"}, only=True)
    # every generated hash is in the archive: done, or not done but in the big batch, or
    # neither (a failed document of an older batch); only the new one is kept for sure
    assert "/in/new.pdf" in [c.path for c in kept]
    assert result.skipped + len(kept) == len(group) and result.skipped > 250


def test_what_is_left_of_a_batch_is_counted_from_an_index(
    archive_db: tuple[Database, Archive],
) -> None:
    """Every finish asks it (`importer.db.lifecycle`): the index `status` counts from
    serves it too."""
    db, archive = archive_db

    def left() -> None:
        with db.engine.connect() as conn:
            conn.execute(_LEFT, {"batch_id": archive.big_batch}).scalar_one()

    assert_indexed(plans_of(db, left), {"ix_documents_batch_status_pages"}, only=True)

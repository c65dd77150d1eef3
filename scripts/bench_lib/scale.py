"""Scale: what an operator and the workers ask the database while an archive of a million
documents sits in it (`scale_rows`), on SQLite and on PostgreSQL, each against < 1 s:

- `importer status --json` (the newest batches) and `status BATCH --json` for the batch of
  200,000 documents (its first 1,000), as `importer.commands.show_status` prints them;
- one reaper pass (`importer.requeue.requeue_stale`), against a gearmand that is running
  and holds no job, so the documents sent long ago are asked about and sent again;
- submit's duplicate check for one group of files (`importer.submit._classify`), half of
  them imported before.

Each round times the calls in-process; `importer status --json` is also timed as a whole
process, for what a person waits, and so on an empty database: the difference is the
archive's share, the rest is start-up (imports).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from sqlalchemy.engine import make_url

from bench_lib.results import Goal, Row, SectionResult
from bench_lib.scale_rows import Archive, fill, sha256_of
from importer.commands import show_status
from importer.config import Settings
from importer.db.engine import Database, open_database
from importer.gearman.address import free_port
from importer.gearman.client import GROUP_SIZE, GearmanIO
from importer.gearman.server import GearmandProcess
from importer.requeue import RequeueReport, requeue_stale
from importer.submit import Candidate, SubmitOptions, SubmitResult, _classify

ROWS, ROWS_QUICK = 1_000_000, 20_000
GOAL_SECONDS = 1.0
PG_ADMIN = os.environ.get("IMPORTER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_DATABASE = "importer_bench_scale"


@dataclass(frozen=True)
class Timed:
    seconds: list[float]
    what: str  # what the first round did (a reaper pass finds work in the first only)


def _time(call: Callable[[], str], rounds: int) -> Timed:
    seconds, said = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        said.append(call())
        seconds.append(time.perf_counter() - started)
    return Timed(seconds, said[0])


@contextmanager
def _sqlite(work: Path) -> Iterator[str]:
    folder = work / "scale-sqlite"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield f"sqlite:///{folder / 'importer.db'}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _postgresql() -> Iterator[str]:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    url = make_url(PG_ADMIN).set(drivername="postgresql+psycopg", database=PG_DATABASE)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


def _status(settings: Settings, batch: str | None) -> Callable[[], str]:
    def call() -> str:
        out = Console(file=io.StringIO(), width=200)
        show_status(settings, batch, as_json=True, out=out)
        return f"{len(out.file.getvalue()):,} bytes of JSON"  # type: ignore[attr-defined]

    return call


def _status_process(settings: Settings) -> Callable[[], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env.update(
        IMPORTER_DATA_DIR=str(settings.data_dir),
        IMPORTER_DATABASE_URL=settings.database_url,
        IMPORTER_GEARMAN_SERVERS=settings.gearman_servers,
        IMPORTER_SECRET_KEYS=settings.secret_keys,
    )

    def call() -> str:
        argv = [sys.executable, "-m", "importer", "status", "--json"]
        subprocess.run(argv, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
        return "a process of its own"

    return call


def _reaper(db: Database, gio: GearmanIO, settings: Settings) -> Callable[[], str]:
    def call() -> str:
        r: RequeueReport = requeue_stale(db, gio, settings.keyring(), max_attempts=3)
        return (
            f"requeued {r.enqueued}: {r.lease_expired} leases run out, {r.never_enqueued}"
            f" never sent, {r.lost_by_gearmand} lost by gearmand"
        )

    return call


def _duplicates(db: Database, archive: Archive) -> Callable[[], str]:
    """One group of files for the big batch: every other one imported before (done or in
    the batch), the rest new."""
    step = max(archive.documents // GROUP_SIZE, 1)
    known = [sha256_of(n) for n in range(0, archive.documents, step)][: GROUP_SIZE // 2]
    new = [sha256_of(archive.documents + n) for n in range(GROUP_SIZE - len(known))]
    group = [
        Candidate(path=f"/in/{n}.pdf", size=600, sha256=sha256, is_pdf=True)
        for n, sha256 in enumerate(known + new)
    ]
    opts = SubmitOptions(email="bench@example.com")

    def call() -> str:
        result = SubmitResult(batch_id=archive.big_batch)
        kept = _classify(db, list(group), opts, result, batch_id=archive.big_batch)
        return f"{len(group)} files: {result.skipped} imported before, {len(kept)} new"

    return call


def _one_database(
    name: str, url: str, work: Path, rows: int, rounds: int, result: SectionResult
) -> None:
    db = open_database(url)
    started = time.perf_counter()
    archive = fill(db, rows)
    result.notes.append(
        f"Scale, {name}: {archive.documents:,} documents in {archive.batches:,} batches (one"
        f" of {archive.big_documents:,}), {archive.pages:,} pages, written in"
        f" {time.perf_counter() - started:.0f} s before the rounds."
    )
    with GearmandProcess(data_dir=work / f"scale-gearmand-{name}", port=free_port()) as gearmand:
        settings = Settings(
            data_dir=work / f"scale-data-{name}",
            database_url=url,
            gearman_servers=gearmand.address,
            secret_keys="bench:" + secrets.token_hex(16),
        )
        with GearmanIO([gearmand.address]) as gio:
            timed = {
                "importer status --json": _status(settings, None),
                f"importer status BATCH --json ({archive.big_documents:,} documents)": _status(
                    settings, archive.big_batch
                ),
                "one reaper pass (requeue_stale)": _reaper(db, gio, settings),
                f"submit's duplicate check, {GROUP_SIZE} files": _duplicates(db, archive),
            }
            figures = {label: _time(call, rounds) for label, call in timed.items()}
            whole = _time(_status_process(settings), rounds)
    section = f"scale, {rows:,} documents, {name}"
    for label, t in figures.items():
        result.rows.append(_row(section, label, t))
        slowest = max(t.seconds)
        result.goals.append(
            Goal(
                f"{section}: {label}",
                f"{slowest:.3f} s (slowest of {len(t.seconds)})",
                f"< {GOAL_SECONDS:g} s",
                slowest < GOAL_SECONDS,
            )
        )
    result.rows.append(_row(section, "importer status --json, the whole process", whole))
    shutil.rmtree(work / f"scale-data-{name}", ignore_errors=True)
    shutil.rmtree(work / f"scale-gearmand-{name}", ignore_errors=True)


def _row(section: str, label: str, t: Timed) -> Row:
    rounds = ", ".join(f"{s:.3f}" for s in t.seconds)
    median = sorted(t.seconds)[len(t.seconds) // 2]
    return Row(section, label, rounds, f"{median:.3f} s", "", t.what)


def postgresql_refusal() -> str | None:
    """Why PostgreSQL cannot be measured here, or None when it can."""
    import psycopg

    try:
        psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5).close()
    except psycopg.OperationalError as e:
        return f"{PG_ADMIN} is not usable ({str(e).strip().splitlines()[0]})"
    return None


def scale(work: Path, rounds: int, quick: bool, rows: int | None = None) -> SectionResult:
    count = rows or (ROWS_QUICK if quick else ROWS)
    result = SectionResult()
    with _sqlite(work) as url:
        empty = Settings(data_dir=work / "scale-empty", database_url=url, gearman_servers="::1:9")
        open_database(url)
        start_up = _time(_status_process(empty), rounds)
    result.rows.append(
        _row("scale, an empty database", "importer status --json, the whole process", start_up)
    )
    with _sqlite(work) as url:
        _one_database("SQLite", url, work, count, rounds, result)
    refusal = postgresql_refusal()
    if refusal:
        result.notes.append(f"Scale on PostgreSQL left out: {refusal}.")
        return result
    with _postgresql() as url:
        _one_database("PostgreSQL", url, work, count, rounds, result)
    return result

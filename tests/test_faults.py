"""Fault injection (issue 3): real processes, real signals, real services; no mocks.

Run alone with `scripts/test -m fault` (add `-s` to see the measurements: kills,
attempts, time to recovery after each fault, the worker's peak memory on hostile files).
Every test uses short leases, small scanned documents at 150 dpi, `--reaper-interval 1`
and low caps through IMPORTER_* variables, so the whole file runs in a few minutes on
two cores.
"""

from __future__ import annotations

import contextlib
import json
import mailbox
import multiprocessing as mp
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import gearman  # type: ignore[import-untyped]
import pytest
from pypdf import PdfReader, PdfWriter
from sqlalchemy import select, update

from importer.config import Settings
from importer.db import Document, Page, open_database
from importer.db.engine import Database
from importer.db.models import Batch, RejectedJob, utcnow
from importer.gearman.address import free_port
from importer.gearman.client import FUNCTION, GearmanIO
from importer.gearman.server import GearmandProcess
from importer.states import FINISHED, DocStatus, JobOutcome
from tests import hostile
from tests.conftest import SAMPLES, _unavailable, importer, settings_from
from tests.gearmand_fixture import require_gearmand
from tests.mail_parts import plain_text
from workers.owner import Owner

# What every fault test runs with; a test adds or overrides keys.
FAST = {
    "IMPORTER_OCR_DPI": "150",
    "IMPORTER_LEASE_SECONDS": "5",
    "IMPORTER_PAGE_TIMEOUT_SECONDS": "30",
    "IMPORTER_DOCUMENT_TIMEOUT_SECONDS": "120",
    "IMPORTER_MAX_ATTEMPTS": "5",
}
REAPER = ("--reaper-interval", "1")
JOB_LINE = re.compile(r"job (j-[0-9a-f]+): (\w+)")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# Documents ------------------------------------------------------------------------------


def scanned_documents(folder: Path, count: int, pages: int) -> dict[str, int]:
    """`count` distinct scanned PDFs of `pages` pages each, from the samples; name -> pages."""
    folder.mkdir(parents=True, exist_ok=True)
    source = [
        *PdfReader(SAMPLES / "scanned_letter.pdf").pages,
        *PdfReader(SAMPLES / "scanned_memo.pdf").pages,
    ]
    made = {}
    for i in range(count):
        writer = PdfWriter()
        for n in range(pages):
            writer.add_page(source[(i + n) % len(source)])
        writer.add_metadata({"/Title": f"fault test document {i}"})
        name = f"scan-{i:02d}.pdf"
        with open(folder / name, "wb") as handle:
            writer.write(handle)
        made[name] = pages
    return made


def blank_documents(folder: Path, count: int) -> None:
    """`count` distinct one-page PDFs, cheap to submit by the hundred."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        writer = PdfWriter()
        writer.add_blank_page(width=612, height=792)
        writer.add_metadata({"/Title": f"blank {i}"})
        with open(folder / f"blank-{i:04d}.pdf", "wb") as handle:
            writer.write(handle)


def fault_env(env: dict[str, str], inbox: Path, **extra: str) -> dict[str, str]:
    out = {**env, **FAST, "IMPORTER_ALLOWED_ROOTS": str(inbox)}
    out.update({f"IMPORTER_{k.upper()}": v for k, v in extra.items()})
    return out


def submit(folder: Path, env: dict[str, str]) -> str:
    proc = importer(
        "submit", str(folder), "--email", "ops@example.com", "--json", env=env, check=True
    )
    return str(json.loads(proc.stdout)["batch_id"])


# Processes, seen through /proc -------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        tree[int(fields[1])].append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree = _children()
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def is_engine(pid: int) -> bool:
    return "workers.engine" in cmdline(pid)


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


class WorkerRun:
    """`importer worker ...` as a user starts it, in its own process group; log to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "importer", "worker", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.engines_seen: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def workers(self) -> list[int]:
        """The supervisor's worker processes (not multiprocessing's resource tracker)."""
        tree = _children()
        return [
            p
            for p in tree.get(self.pid, [])
            if not any("resource_tracker" in a for a in cmdline(p))
        ]

    def engines(self) -> dict[int, int]:
        """Engine children (one per document being read) -> the worker process running them."""
        found = {}
        for worker in self.workers():
            for child in _children().get(worker, []):
                if is_engine(child):
                    found[child] = worker
        self.engines_seen.update(found)
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def outcomes(self) -> dict[str, Counter[JobOutcome]]:
        """job id -> how often each outcome (done, retry, dead, dropped, ...) was logged."""
        seen: dict[str, Counter[JobOutcome]] = defaultdict(Counter)
        for job_id, outcome in JOB_LINE.findall(self.log()):
            seen[job_id][JobOutcome(outcome)] += 1
        return seen

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"importer worker exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> None:
        """Kill what is left of this run: the supervisor, its workers, their engine children."""
        pids = [self.pid, *descendants(self.pid)]
        pids += [p for p in self.engines_seen if alive(p) and is_engine(p)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def worker_run(env: dict[str, str], log_path: Path, *args: str) -> Iterator[WorkerRun]:
    run = WorkerRun(env, log_path, *args)
    try:
        yield run
    finally:
        run.stop()


class PeakMemory:
    """Samples the RSS of a whole process tree from /proc every few milliseconds."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self.peak = 0
        self.largest: tuple[int, str] = (0, "")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in [self.root, *descendants(self.root)]:
                size = rss(pid)
                total += size
                if size > self.largest[0]:
                    argv = cmdline(pid)
                    self.largest = (size, " ".join(argv[:3]) if argv else str(pid))
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# The database's view ----------------------------------------------------------------------


def database(env: dict[str, str]) -> Database:
    return open_database(settings_from(env).resolved_database_url)


def documents(db: Database, batch: str) -> dict[str, Document]:
    with db.session() as s:
        rows = s.scalars(select(Document).where(Document.batch_id == batch)).all()
    return {Path(d.path).name: d for d in rows}


def page_numbers(db: Database, doc_id: int) -> list[int]:
    with db.session() as s:
        return list(
            s.scalars(select(Page.number).where(Page.document_id == doc_id).order_by(Page.number))
        )


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float, run: WorkerRun | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if run is not None:
            run.check_running()
        time.sleep(0.1)
    detail = f"\n--- worker log ---\n{run.tail()}" if run is not None else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


def batch_finished(db: Database, batch: str) -> bool:
    with db.session() as s:
        finished = s.scalar(select(Batch.finished_at).where(Batch.id == batch))
    return finished is not None and all(d.status in FINISHED for d in documents(db, batch).values())


def mails(env: dict[str, str]) -> list[Any]:
    folder = Path(env["IMPORTER_DATA_DIR"]) / "mail"
    if not all((folder / part).is_dir() for part in ("tmp", "new", "cur")):
        return []  # not yet, or being made: a Maildir's folders appear one after another
    return list(mailbox.Maildir(folder, create=False))


def mid_document(db: Database, batch: str, *, left: int = 2) -> list[Document]:
    """Running documents with pages stored and at least `left` pages still to read."""
    return [
        d
        for d in documents(db, batch).values()
        if d.status == DocStatus.running
        and d.pages
        and d.pages_done >= 1
        and d.pages - d.pages_done >= left
        and d.lease_owner
    ]


def owner_pid(doc: Document) -> int:
    owner = Owner.decode(doc.lease_owner or "")
    return owner.pid if owner is not None else 0


def recovery(db: Database, batch: str, fault_at: datetime) -> float:
    """Seconds from a fault to the next document of the batch finishing."""
    after = [
        d.finished_at
        for d in documents(db, batch).values()
        if d.finished_at is not None and d.finished_at > fault_at
    ]
    return (min(after) - fault_at).total_seconds() if after else float("nan")


def assert_done_once(
    db: Database, batch: str, expected: dict[str, int], run: WorkerRun, env: dict[str, str]
) -> dict[str, Document]:
    """Every document done with each page stored once, one `done` per job, one e-mail."""
    docs = documents(db, batch)
    assert set(docs) == set(expected)
    for name, doc in docs.items():
        assert doc.status == DocStatus.done, (name, doc.status, doc.error)
        assert doc.pages == doc.pages_done == expected[name], name
        assert page_numbers(db, doc.id) == list(range(1, expected[name] + 1)), name
        assert doc.lease_owner is None and doc.attempts >= 1
    # a worker logs its outcome after the e-mail that its document's end decided
    wait_for("the batch e-mail", lambda: mails(env), 30, run)
    wait_for(
        "every job's outcome in the worker log",
        lambda: all(run.outcomes()[d.job_id][JobOutcome.done] for d in docs.values()),
        30,
        run,
    )
    time.sleep(0.5)
    outcomes = run.outcomes()
    for name, doc in docs.items():
        assert outcomes[doc.job_id][JobOutcome.done] == 1, (name, dict(outcomes[doc.job_id]))
    assert len(mails(env)) == 1
    return docs


def report(title: str, lines: list[str]) -> None:
    print(f"\n[fault] {title}")
    for line in lines:
        print(f"[fault]   {line}")


# Worker kills ---------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    at: datetime
    job_id: str
    victim: str
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.mark.fault
def test_sigkill_of_document_children_and_of_a_worker_loses_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """SIGKILL the engine child mid-document, again and again, then a worker process itself."""
    inbox = tmp_path / "inbox"
    expected = scanned_documents(inbox, count=8, pages=5)
    env = fault_env(env, inbox)
    batch = submit(inbox, env)
    db = database(env)
    faults: list[Fault] = []
    child_kills = 3
    started = time.monotonic()
    with worker_run(env, tmp_path / "worker.log", "--concurrency", "2", *REAPER) as run:
        killed_engines: set[int] = set()

        def kill_a_child() -> bool:
            engines = run.engines()
            for doc in mid_document(db, batch):
                for engine, worker in engines.items():
                    if worker == owner_pid(doc) and engine not in killed_engines:
                        os.kill(engine, signal.SIGKILL)
                        killed_engines.add(engine)
                        faults.append(
                            Fault(
                                "engine child",
                                utcnow(),
                                doc.job_id,
                                Path(doc.path).name,
                                {"pages_done": doc.pages_done},
                            )
                        )
                        return True
            return False

        for n in range(child_kills):
            wait_for(f"a document mid-way to kill its child (kill {n + 1})", kill_a_child, 90, run)
            time.sleep(1.0)

        def kill_a_worker() -> bool:
            workers = set(run.workers())
            for doc in mid_document(db, batch):
                if owner_pid(doc) in workers:
                    os.kill(owner_pid(doc), signal.SIGKILL)
                    faults.append(
                        Fault(
                            "worker process",
                            utcnow(),
                            doc.job_id,
                            Path(doc.path).name,
                            {"pid": owner_pid(doc)},
                        )
                    )
                    return True
            return False

        wait_for("a document mid-way to kill its worker", kill_a_worker, 90, run)
        wait_for("the batch to finish", lambda: batch_finished(db, batch), 180, run)
        docs = assert_done_once(db, batch, expected, run, env)
        elapsed = time.monotonic() - started

        assert sum(d.attempts for d in docs.values()) >= len(docs) + len(faults)
        by_job = {d.job_id: d for d in docs.values()}
        for fault in faults:
            assert by_job[fault.job_id].attempts >= 2, fault
        assert re.search(r"worker-\d exited with -9; restarting", run.log()), run.tail()
        assert run.proc.poll() is None, "the supervisor must survive its workers"
        orphans = [p for p in run.engines_seen if alive(p) and is_engine(p)]
        wait_for(
            "engine children of killed workers to exit",
            lambda: not [p for p in orphans if alive(p) and is_engine(p)],
            30,
        )

    lines = [
        f"{len(docs)} documents x {expected[next(iter(expected))]} pages, done after "
        f"{child_kills} engine-child kills and 1 worker kill in {elapsed:.1f} s"
    ]
    for fault in faults:
        victim = by_job[fault.job_id]
        assert victim.finished_at is not None
        lines.append(
            f"{fault.kind} killed on {fault.victim} ({fault.extra}): next document finished "
            f"{recovery(db, batch, fault.at):.1f} s later, the victim "
            f"{(victim.finished_at - fault.at).total_seconds():.1f} s later "
            f"(attempts {victim.attempts})"
        )
    lines.append("attempts: " + ", ".join(f"{n}={d.attempts}" for n, d in sorted(docs.items())))
    report("worker kills", lines)


# gearmand kill ------------------------------------------------------------------------------


@pytest.mark.fault
def test_gearmand_sigkill_and_restart_mid_batch(
    tmp_path: Path, env: dict[str, str], gearmand: GearmandProcess
) -> None:
    """Queued jobs survive in gearmand's sqlite queue, workers reconnect, replays are harmless."""
    inbox = tmp_path / "inbox"
    expected = scanned_documents(inbox, count=6, pages=4)
    env = fault_env(env, inbox)
    batch = submit(inbox, env)
    db = database(env)
    started = time.monotonic()
    with worker_run(env, tmp_path / "worker.log", "--concurrency", "2", *REAPER) as run:

        def mid_batch() -> bool:
            docs = documents(db, batch).values()
            return (
                any(d.status == DocStatus.done for d in docs)
                and any(d.status == DocStatus.queued for d in docs)
                and bool(mid_document(db, batch, left=1))
            )

        wait_for("a batch with documents done, running and queued", mid_batch, 90, run)
        before = documents(db, batch)
        gearmand.kill()
        killed_at = utcnow()
        queued = [d.job_id for d in before.values() if d.status == DocStatus.queued]
        running = [d.job_id for d in before.values() if d.status == DocStatus.running]
        time.sleep(1.0)
        gearmand.restart()
        restarted_at = utcnow()
        with GearmanIO([gearmand.address]) as gio:
            known = gio.status_by_unique(queued)
        assert all(known[j].known for j in queued), "queued jobs lost by a gearmand SIGKILL"

        wait_for("the batch to finish", lambda: batch_finished(db, batch), 180, run)
        docs = assert_done_once(db, batch, expected, run, env)
        elapsed = time.monotonic() - started
        assert "exited with" not in run.log(), "a worker died instead of reconnecting"
        with GearmanIO([gearmand.address]) as gio:
            wait_for(
                "gearmand's queue to drain",
                lambda: (
                    gio.admin_status().get(FUNCTION.decode()) is None
                    or gio.admin_status()[FUNCTION.decode()].queued == 0
                ),
                30,
            )
        # Each job that was running when gearmand died comes back from its queue once more;
        # the second run finds the document finished (or leased) and changes nothing.
        outcomes = run.outcomes()
        replays = {j: dict(outcomes[j]) for j in running}
        for job_id, seen in replays.items():
            assert seen[JobOutcome.done] == 1 and sum(seen.values()) == 2, (job_id, seen)
        with db.session() as s:
            refused = Counter(s.scalars(select(RejectedJob.kind)))
        assert refused["rejected"] == 0, refused  # a gearmand crash does not look like an attack

    first_after_restart = [
        d.finished_at for d in docs.values() if d.job_id in queued and d.finished_at
    ]
    down = (restarted_at - killed_at).total_seconds()
    queued_done = (min(first_after_restart) - killed_at).total_seconds()
    report(
        "gearmand kill",
        [
            f"{len(docs)} documents done in {elapsed:.1f} s; gearmand SIGKILLed with "
            f"{len(running)} running and {len(queued)} queued, restarted {down:.1f} s later "
            "on the same port and queue",
            f"next document finished {recovery(db, batch, killed_at):.1f} s after the kill; "
            f"the first document queued at the kill finished {queued_done:.1f} s after it",
            f"jobs running at the kill and their runs (the replay second): {replays}",
            "attempts: " + ", ".join(f"{n}={d.attempts}" for n, d in sorted(docs.items())),
        ],
    )


# PostgreSQL outage --------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


class PrivateCluster:
    """A PostgreSQL cluster of our own (initdb + pg_ctl in a temp dir), never the shared one."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="importer-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _argv(self, *argv: str) -> list[str]:
        tool = [str(self.bindir / argv[0]), *argv[1:]]
        if not self.as_root:
            return tool
        if shutil.which("runuser"):
            return ["runuser", "-u", "postgres", "--", *tool]
        return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(tool)]

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._argv(*argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def init(self) -> str | None:
        """Create the cluster; a reason why not, or None."""
        if self.as_root:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                return "initdb refuses to run as root and there is no postgres user"
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        proc = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        if proc.returncode != 0:
            return f"initdb failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        return None

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        proc = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr + self.log()

    def stop(self, mode: str = "fast") -> None:
        proc = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        _unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
            "apt-get install postgresql"
        )
    assert bindir is not None
    cluster = PrivateCluster(bindir)
    try:
        why = cluster.init()
        if why:
            _unavailable(f"cannot create a private PostgreSQL cluster: {why}")
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.fault
def test_postgresql_stopped_for_ten_seconds_mid_batch(
    tmp_path: Path, env: dict[str, str], private_postgres: PrivateCluster
) -> None:
    """Workers wait the outage out and finish; nothing is lost or read twice.

    The lease (30 s) outlasts the outage, as the default (300 s) outlasts a database
    restart: no lease can be renewed while the database is down.
    """
    inbox = tmp_path / "inbox"
    expected = scanned_documents(inbox, count=6, pages=4)
    env = fault_env(env, inbox, lease_seconds="30", database_url=private_postgres.url)
    batch = submit(inbox, env)
    db = database(env)
    started = time.monotonic()
    with worker_run(env, tmp_path / "worker.log", "--concurrency", "2", *REAPER) as run:

        def mid_batch() -> bool:
            docs = documents(db, batch).values()
            return any(d.status == DocStatus.done for d in docs) and bool(
                mid_document(db, batch, left=1)
            )

        wait_for("a batch with documents done and running", mid_batch, 90, run)
        private_postgres.stop()
        stopped_at = utcnow()
        time.sleep(10)
        private_postgres.start()
        restarted_at = utcnow()
        db.engine.dispose()
        wait_for("the batch to finish", lambda: batch_finished(db, batch), 240, run)
        docs = assert_done_once(db, batch, expected, run, env)
        elapsed = time.monotonic() - started
        assert run.proc.poll() is None
        assert "exited with" not in run.log(), "a worker died instead of waiting"

    report(
        "PostgreSQL outage",
        [
            f"{len(docs)} documents done in {elapsed:.1f} s; the private cluster was down for "
            f"{(restarted_at - stopped_at).total_seconds():.1f} s",
            f"next document finished {recovery(db, batch, stopped_at):.1f} s after the stop, "
            f"{recovery(db, batch, restarted_at):.1f} s after the start",
            "attempts: " + ", ".join(f"{n}={d.attempts}" for n, d in sorted(docs.items())),
        ],
    )


# A document that kills its child every time -------------------------------------------------


@pytest.mark.fault
def test_document_that_crashes_every_attempt_goes_dead(tmp_path: Path, env: dict[str, str]) -> None:
    """A page that needs more memory than IMPORTER_CHILD_MEMORY_MB allows, on every attempt."""
    inbox = tmp_path / "inbox"
    expected = scanned_documents(inbox, count=3, pages=2)
    shutil.copy(SAMPLES / "born_digital.pdf", inbox / "born_digital.pdf")
    expected["born_digital.pdf"] = 3
    hostile.memory_hog(inbox / "memory-hog.pdf", megapixels=150, dpi=150)
    env = fault_env(env, inbox, max_attempts="3", child_memory_mb="200")
    batch = submit(inbox, env)
    db = database(env)
    started = time.monotonic()
    with worker_run(env, tmp_path / "worker.log", "--concurrency", "2", *REAPER) as run:
        wait_for("the batch to finish", lambda: batch_finished(db, batch), 180, run)
        elapsed = time.monotonic() - started
        docs = documents(db, batch)
        hog = docs.pop("memory-hog.pdf")
        assert hog.status == DocStatus.dead, (hog.status, hog.error)
        assert hog.attempts == 3
        assert "gave up after 3 attempts" in (hog.error or "")
        for name, doc in docs.items():
            assert doc.status == DocStatus.done, (name, doc.error)
            assert doc.pages_done == expected[name]
        wait_for("the batch e-mail", lambda: mails(env), 30)
        time.sleep(3)  # long enough for a loop to show: the reaper runs every second
        assert run.outcomes()[hog.job_id] == Counter({JobOutcome.retry: 2, JobOutcome.dead: 1})
        assert documents(db, batch)["memory-hog.pdf"].attempts == 3
        with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
            assert not gio.status_by_unique([hog.job_id])[hog.job_id].known
        messages = mails(env)
        assert len(messages) == 1
        body = plain_text(messages[0])
        assert "memory-hog.pdf" in body

    report(
        "document that crashes every attempt",
        [
            f"memory-hog.pdf: dead after {hog.attempts} attempts ({hog.error}); the other "
            f"{len(docs)} documents done; batch finished in {elapsed:.1f} s",
        ],
    )


# Hostile files ------------------------------------------------------------------------------


HOSTILE_ENV = {
    "IMPORTER_MAX_PAGES": "1000",  # the 2,000-page file is refused by the cap, see below
    "IMPORTER_PAGE_TIMEOUT_SECONDS": "60",
    "IMPORTER_DOCUMENT_TIMEOUT_SECONDS": "120",
}
HOSTILE_DPI = 150


def make_hostile(folder: Path) -> dict[str, str]:
    """Every hostile file, with the words its failure reason must contain.

    The 2,000-page document meets a test-lowered IMPORTER_MAX_PAGES of 1,000: what is
    tested is that the page-count cap refuses it before reading a page. Within the default
    cap of 5,000 its 2,000 blank pages would each be rendered and OCRed (minutes), which
    is the benchmark's business, not a fault test's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    letter = SAMPLES / "scanned_letter.pdf"
    hostile.zero_bytes(folder / "zero-bytes.pdf")
    hostile.truncated(folder / "truncated.pdf", letter)
    hostile.not_a_pdf(folder / "not-a-pdf.pdf")
    hostile.encrypted(folder / "encrypted.pdf", SAMPLES / "scanned_memo.pdf")
    hostile.huge_page(folder / "huge-page.pdf", pixels=40_000, dpi=HOSTILE_DPI)
    hostile.many_pages(folder / "2000-pages.pdf", pages=2000)
    hostile.deeply_nested(folder / "deeply-nested.pdf")
    hostile.flate_bomb(folder / "flate-bomb.pdf", side=20_000)
    hostile.jbig2_bomb(folder / "jbig2-bomb.pdf")
    return {
        "zero-bytes.pdf": "not a PDF",
        "truncated.pdf": "corrupt PDF",
        "not-a-pdf.pdf": "not a PDF",
        "encrypted.pdf": "encrypted PDF",
        "huge-page.pdf": "40,000 x 40,000 pixels",
        "2000-pages.pdf": "2,000 pages, over the 1,000 page cap",
        "deeply-nested.pdf": "corrupt PDF",
        "flate-bomb.pdf": "20,000 x 20,000 pixel image",
        "jbig2-bomb.pdf": "60,000 x 60,000 pixel image",
    }


@dataclass
class HostileBatch:
    reasons: dict[str, str]
    docs: dict[str, Document]
    seconds: dict[str, float]
    elapsed: float
    peak: int
    largest: tuple[int, str]
    mail: str
    worker_alive: bool
    restarts: int


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileBatch]:
    """One batch of every hostile file and one good document, through real workers."""
    require_gearmand()
    tmp = tmp_path_factory.mktemp("hostile")
    inbox = tmp / "inbox"
    reasons = make_hostile(inbox)
    shutil.copy(SAMPLES / "born_digital.pdf", inbox / "born_digital.pdf")
    server = GearmandProcess(data_dir=tmp / "gearmand")
    server.start()
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
        env = {
            **base,
            **FAST,
            **HOSTILE_ENV,
            "IMPORTER_DATA_DIR": str(tmp / "data"),
            "IMPORTER_GEARMAN_SERVERS": server.address,
            "IMPORTER_SECRET_KEYS": "k1:" + os.urandom(16).hex(),
            "IMPORTER_ALLOWED_ROOTS": str(inbox),
            "IMPORTER_OCR_DPI": str(HOSTILE_DPI),
        }
        batch = submit(inbox, env)
        db = database(env)
        started = time.monotonic()
        with (
            worker_run(env, tmp / "worker.log", "--concurrency", "2", *REAPER) as run,
            PeakMemory(run.pid) as memory,
        ):
            wait_for("the hostile batch to finish", lambda: batch_finished(db, batch), 240, run)
            elapsed = time.monotonic() - started
            wait_for("the batch e-mail", lambda: mails(env), 30)
            worker_alive = run.proc.poll() is None
            restarts = len(re.findall(r"worker-\d exited with", run.log()))
        docs = documents(db, batch)
        seconds = {
            name: (d.finished_at - d.started_at).total_seconds()
            for name, d in docs.items()
            if d.finished_at and d.started_at
        }
        body = plain_text(mails(env)[0])
        yield HostileBatch(
            reasons,
            docs,
            seconds,
            elapsed,
            memory.peak,
            memory.largest,
            body,
            worker_alive,
            restarts,
        )
    finally:
        server.stop()


@pytest.mark.fault
def test_hostile_batch_finishes_and_the_worker_survives(hostile_batch: HostileBatch) -> None:
    hb = hostile_batch
    assert hb.worker_alive and hb.restarts == 0
    assert hb.docs["born_digital.pdf"].status == DocStatus.done
    assert all(d.status in FINISHED for d in hb.docs.values())
    cap = float(HOSTILE_ENV["IMPORTER_DOCUMENT_TIMEOUT_SECONDS"])
    for name, seconds in hb.seconds.items():
        assert seconds < cap, f"{name} took {seconds:.1f} s"
    lines = [
        f"{len(hb.docs)} documents finished in {hb.elapsed:.1f} s",
        f"worker peak memory (supervisor + workers + engine children + tools, RSS sampled "
        f"from /proc every 50 ms): {hb.peak / 2**20:,.0f} MB; largest single process "
        f"{hb.largest[0] / 2**20:,.0f} MB ({hb.largest[1]})",
    ]
    for name, doc in sorted(hb.docs.items()):
        took = f"in {hb.seconds[name]:.1f} s" if name in hb.seconds else "at submit"
        lines.append(f"{name}: {doc.status} {took}, attempts {doc.attempts}: {doc.error}")
    report("hostile files", lines)


@pytest.mark.fault
@pytest.mark.parametrize(
    "name",
    [
        "zero-bytes.pdf",
        "truncated.pdf",
        "not-a-pdf.pdf",
        "encrypted.pdf",
        "huge-page.pdf",
        "2000-pages.pdf",
        "deeply-nested.pdf",
        "flate-bomb.pdf",
        "jbig2-bomb.pdf",
    ],
)
def test_hostile_file_fails_with_its_reason(hostile_batch: HostileBatch, name: str) -> None:
    doc = hostile_batch.docs[name]
    assert doc.status == DocStatus.failed, (doc.status, doc.error, doc.pages_done)
    assert hostile_batch.reasons[name] in (doc.error or "")
    assert doc.attempts <= 1, "a permanent failure is not retried"
    assert name in hostile_batch.mail


# SIGTERM ------------------------------------------------------------------------------------


@pytest.mark.fault
def test_sigterm_drains_and_a_second_sigterm_stops_at_once(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """At 600 dpi a page takes a second or two: long enough to tell draining from stopping."""
    inbox = tmp_path / "inbox"
    scanned_documents(inbox, count=1, pages=16)
    env = fault_env(env, inbox, ocr_dpi="600")
    batch = submit(inbox, env)
    db = database(env)

    def progressed(beyond: int) -> Document | None:
        doc = next(iter(documents(db, batch).values()))
        ok = doc.status == DocStatus.running and doc.pages and doc.pages_done > beyond
        return doc if ok and doc.pages and doc.pages - doc.pages_done >= 3 else None

    def handed_back() -> Document:
        doc = next(iter(documents(db, batch).values()))
        assert doc.status == DocStatus.queued, (doc.status, doc.error)
        assert doc.lease_owner is None and doc.lease_expires_at is None
        assert page_numbers(db, doc.id) == list(range(1, doc.pages_done + 1))
        return doc

    # First SIGTERM: the worker finishes the page it is on and hands the document back.
    with worker_run(env, tmp_path / "worker-1.log", *REAPER) as run:
        before = wait_for("pages to be stored", lambda: progressed(1), 120, run)
        engines = set(run.engines())
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        code = run.proc.wait(60)
        drain = time.monotonic() - sent
        assert code == 0, run.tail()
        assert "released: worker stopping; pages kept" in run.log(), run.tail()
    first = handed_back()
    assert first.pages_done >= before.pages_done
    assert first.attempts == 0, "a document handed back at shutdown is not charged an attempt"
    wait_for("the engine child to exit", lambda: not [p for p in engines if alive(p)], 10)
    assert drain < float(FAST["IMPORTER_PAGE_TIMEOUT_SECONDS"]), f"drained in {drain:.1f} s"

    # Second SIGTERM right after the first: stop now, mid-page, with the lease released.
    with worker_run(env, tmp_path / "worker-2.log", *REAPER) as run:
        wait_for(
            "the document to be taken up again",
            lambda: progressed(first.pages_done + 1),
            120,
            run,
        )
        engines = set(run.engines())
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        run.proc.send_signal(signal.SIGTERM)
        code = run.proc.wait(60)
        stop = time.monotonic() - sent
        assert code == 0, run.tail()
        assert "stopped at once by a second signal" in run.log(), run.tail()
        assert "Traceback" not in run.log(), run.tail()
    second = handed_back()
    assert second.pages_done > first.pages_done, "pages read before the stop are kept"
    wait_for("the engine child to exit", lambda: not [p for p in engines if alive(p)], 10)
    assert stop < 5.0, f"a second SIGTERM took {stop:.1f} s to stop the worker"

    report(
        "SIGTERM (pages at 600 dpi)",
        [
            f"first SIGTERM: drained in {drain:.1f} s, exit 0, document handed back with "
            f"{first.pages_done}/{first.pages} pages kept, attempts {first.attempts}",
            f"two SIGTERMs 0.2 s apart: stopped in {stop:.1f} s, exit 0, document handed back "
            f"with {second.pages_done}/{second.pages} pages kept, lease released",
        ],
    )


# Two reapers ------------------------------------------------------------------------------------


class Recorder(gearman.GearmanWorker):  # type: ignore[misc]
    """A plain worker that takes every `import` job and records its unique."""

    def __init__(self, hosts: list[str]) -> None:
        super().__init__(hosts)
        self.seen: list[str] = []
        self.stop = threading.Event()
        self.register_task(FUNCTION, self._take)

    def _take(self, _worker: object, job: Any) -> bytes:
        self.seen.append(job.unique.decode() if isinstance(job.unique, bytes) else job.unique)
        return b"taken"

    def after_poll(self, any_activity: bool) -> bool:
        return not self.stop.is_set()


def _reaper_process(settings_data: dict[str, Any], gate: Any, out: Any) -> None:
    from importer.requeue import requeue_stale

    settings = Settings(**settings_data)
    db = open_database(settings.resolved_database_url)
    with GearmanIO.from_settings(settings) as gio:
        gate.wait(30)
        out.put(requeue_stale(db, gio, settings.keyring()).enqueued)


@pytest.mark.fault
def test_two_reapers_never_enqueue_a_document_twice(
    tmp_path: Path, env: dict[str, str], database_url: str
) -> None:
    """Reapers started together over documents whose workers vanished (leases expired)."""
    inbox = tmp_path / "inbox"
    count = 600
    blank_documents(inbox, count)
    env = fault_env(env, inbox, database_url=database_url)
    batch = submit(inbox, env)
    db = database(env)
    recorder = Recorder([env["IMPORTER_GEARMAN_SERVERS"]])
    thread = threading.Thread(target=recorder.work, kwargs={"poll_timeout": 0.2}, daemon=True)
    thread.start()
    try:
        wait_for("the submitted jobs to be taken", lambda: len(recorder.seen) == count, 60)
        with db.session() as s:
            s.execute(
                update(Document)
                .where(Document.batch_id == batch)
                .values(
                    status=DocStatus.running,
                    lease_owner="vanished-host:1",
                    lease_expires_at=utcnow().replace(year=2000),
                    enqueued_at=None,
                )
            )
        recorder.seen.clear()

        ctx = mp.get_context("spawn")
        gate, out = ctx.Event(), ctx.Queue()
        data = settings_from(env).model_dump(include=settings_from(env).model_fields_set)
        reapers = [ctx.Process(target=_reaper_process, args=(data, gate, out)) for _ in range(3)]
        for proc in reapers:
            proc.start()
        time.sleep(3)  # every reaper connected and waiting at the gate
        gate.set()
        for proc in reapers:
            proc.join(60)
            assert proc.exitcode == 0
        enqueued = [out.get(timeout=5) for _ in reapers]
        cli = importer("requeue", "--stale", env=env, check=True)

        wait_for("the requeued jobs to be taken", lambda: len(recorder.seen) >= count, 60)
        time.sleep(2)  # a duplicate would arrive now
    finally:
        recorder.stop.set()
        thread.join(10)
        recorder.shutdown()

    assert sum(enqueued) == count, enqueued
    assert "requeued 0" in cli.stdout
    duplicates = {u: n for u, n in Counter(recorder.seen).items() if n > 1}
    assert not duplicates and len(recorder.seen) == count
    docs = documents(db, batch).values()
    assert all(d.status == DocStatus.queued and d.enqueued_at for d in docs)
    assert len({d.gearman_handle for d in docs}) == count
    report(
        f"two reapers ({db.dialect})",
        [
            f"{count} documents with expired leases, 3 reapers started together: "
            f"enqueued {enqueued} (sum {sum(enqueued)}); gearmand delivered each job once"
        ],
    )

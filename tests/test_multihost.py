"""Several machines, made of network namespaces: gearmand behind mutual TLS on one host,
PostgreSQL on another, workers on two more, the submitter on a fifth.

The submitter sends each file inside its job (`--inline`) and the files are deleted once
submitted: no worker could read them by path. Mid-batch, the link of the worker host that
holds a document goes down; the other host finishes every document, each exactly once,
and one e-mail goes out.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from inotify_simple import INotify, flags

from tests.netns import Host, Lan, NamespacesUnavailable

PG_BIN = Path("/usr/lib/postgresql/15/bin")
GEARMAND_PORT = 4730
PG_PORT = 5432
DOCUMENTS = 6
PAGES = 3
GOAL_SECONDS = 90.0  # a cut-off host's document running again
BOUND_SECONDS = 3 * GOAL_SECONDS
IMPORTER = [sys.executable, "-m", "importer"]

pytestmark = pytest.mark.slow


@pytest.fixture
def lan() -> Iterator[Lan]:
    try:
        made = Lan()
    except NamespacesUnavailable as e:
        pytest.skip(str(e))
    try:
        yield made
    finally:
        made.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


class Postgres:
    """A private PostgreSQL cluster on `host`, run by the postgres user (it refuses root)."""

    def __init__(self, host: Host, root: Path) -> None:
        self.host = host
        self.data = root / "pgdata"
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, "postgres", "postgres")
        self.url = f"postgresql+psycopg://postgres@{host.address}:{PG_PORT}/postgres"

    def start(self) -> None:
        self._as_postgres(
            PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"
        )
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.host.address.rsplit('.', 1)[0]}.0/24 trust\n")
        options = (
            f"-c listen_addresses={self.host.address} -c port={PG_PORT}"
            f" -c unix_socket_directories={self.data} -c fsync=off"
        )
        self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self.data, "-o", options, "-l", self.data / "log",
            "-w", "start",
        )  # fmt: skip

    def query(self, sql: str) -> list[list[str]]:
        out = self._as_postgres(
            PG_BIN / "psql", "-At", "-F", "\t", "-h", self.host.address, "-U", "postgres",
            "-c", sql,
        )  # fmt: skip
        return [line.split("\t") for line in out.splitlines() if line]

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "stop")

    def _as_postgres(self, *argv: object) -> str:
        proc = self.host.run(["runuser", "-u", "postgres", "--", *map(str, argv)], timeout=120)
        assert proc.returncode == 0, f"{argv[0]}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout


def make_inbox(root: Path) -> list[Path]:
    from tests.test_text_layer import md

    inbox = root / "inbox"
    inbox.mkdir()
    paths = []
    for n in range(DOCUMENTS):
        path = inbox / f"scan-{n}.pdf"
        md.scan_document(pages=PAGES, rotations=(0,), seed=20 + n).write(path)
        paths.append(path)
    return paths


def test_a_batch_survives_a_worker_host_cut_off_mid_document(lan: Lan, shared_tmp: Path) -> None:
    gear, db, w1, w2, sub = (lan.add(n) for n in ("gear", "db", "w1", "w2", "sub"))
    certs = shared_tmp / "certs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    subprocess.run(
        [*IMPORTER, "certs", "init", str(certs), "--host", gear.address],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    postgres = Postgres(db, shared_tmp)
    postgres.start()
    try:
        _run_batch(lan, shared_tmp, certs, env, gear, postgres, (w1, w2), sub)
    finally:
        postgres.stop()


def _run_batch(
    lan: Lan,
    root: Path,
    certs: Path,
    env: dict[str, str],
    gear: Host,
    postgres: Postgres,
    workers: tuple[Host, Host],
    sub: Host,
) -> None:
    maildir = root / "mail"
    common = {
        **env,
        "IMPORTER_DATABASE_URL": postgres.url,
        "IMPORTER_GEARMAN_SERVERS": f"{gear.address}:{GEARMAND_PORT}",
        "IMPORTER_SECRET_KEYS": "k1:" + secrets.token_hex(32),
        "IMPORTER_TLS_CA": str(certs / "ca.pem"),
        "IMPORTER_TLS_CERT": str(certs / "client.pem"),
        "IMPORTER_TLS_KEY": str(certs / "client.key"),
        "IMPORTER_MAIL_URL": f"maildir://{maildir}",
    }

    def on(host: Host, roots: Path | None = None) -> dict[str, str]:
        if roots is None:  # a worker host shares no storage with the submitter
            roots = root / f"{host.name}-shares-nothing"
            roots.mkdir(exist_ok=True)
        return {
            **common,
            "IMPORTER_DATA_DIR": str(root / host.name),
            "IMPORTER_ALLOWED_ROOTS": str(roots),
        }

    gear.start(
        [*IMPORTER, "gearmand", "--tls", "--certs", str(certs), "--listen", gear.address,
         "--port", str(GEARMAND_PORT)],
        env=on(gear), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    knock = f"import socket; socket.create_connection(({gear.address!r}, {GEARMAND_PORT}), 2)"
    wait_for(
        lambda: sub.run([sys.executable, "-c", knock], timeout=30).returncode == 0,
        60, "gearmand answering",
    )  # fmt: skip
    for worker in workers:
        worker.start(
            [*IMPORTER, "worker", "--concurrency", "1"],
            env=on(worker), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    paths = make_inbox(root)
    watch = INotify()
    watch.add_watch(str(paths[0].parent), flags.OPEN)
    # An inline submit stays to send again what comes back, until its batch has finished.
    submitter = sub.start(
        [*IMPORTER, "submit", "--inline", str(paths[0].parent), "--email", "ops@example.com",
         "--json"],
        env=on(sub, paths[0].parent), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    unsent = (
        "SELECT count(*) FILTER (WHERE status = 'queued' AND enqueued_at IS NULL), count(*)"
        " FROM documents"
    )
    wait_for(lambda: postgres.query(unsent)[0] == ["0", str(DOCUMENTS)], 120, "all sent")
    (batch,) = postgres.query("SELECT id FROM batches")[0]
    submitter_opens = len(watch.read(timeout=0))  # hashing and sending them
    for path in paths:
        path.unlink()

    def running_on(host: Host) -> list[list[str]]:
        return postgres.query(
            "SELECT id, attempts FROM documents WHERE status = 'running'"
            f" AND lease_owner LIKE '{host.name}:%'"
            " AND EXISTS (SELECT 1 FROM pages WHERE pages.document_id = documents.id)"
        )

    held: list[list[str]] = []

    def some_host_reading() -> bool:
        nonlocal held
        held = running_on(workers[0]) or running_on(workers[1])
        return bool(held)

    wait_for(some_host_reading, 120, "a worker host reading a document")
    victim = workers[0] if running_on(workers[0]) else workers[1]
    doc_id, attempts = held[0]
    lan.cut(victim)
    cut_at = time.monotonic()
    took = wait_for(
        lambda: postgres.query(f"SELECT attempts FROM documents WHERE id = {doc_id}")[0][0]
        != attempts,
        BOUND_SECONDS, "the cut-off host's document running again",
    )  # fmt: skip
    print(f"document {doc_id} running again {took:.1f} s after {victim.name} was cut off")
    wait_for(
        lambda: postgres.query(
            f"SELECT count(*) FROM documents WHERE batch_id = '{batch}' AND status <> 'done'"
        )[0][0] == "0",
        BOUND_SECONDS, "every document done",
    )  # fmt: skip
    print(f"batch done {time.monotonic() - cut_at:.1f} s after the cut")
    pages = postgres.query(
        "SELECT d.id, count(*), count(DISTINCT p.number) FROM documents d"
        f" JOIN pages p ON p.document_id = d.id WHERE d.batch_id = '{batch}' GROUP BY d.id"
    )
    assert len(pages) == DOCUMENTS
    assert all(total == distinct == str(PAGES) for _, total, distinct in pages), pages
    owners = postgres.query(f"SELECT DISTINCT status FROM documents WHERE batch_id = '{batch}'")
    assert owners == [["done"]]
    wait_for(lambda: (maildir / "new").is_dir() and any((maildir / "new").iterdir()), 60, "mail")
    time.sleep(2)  # a second e-mail would come within the courier's next passes
    assert len(list((maildir / "new").iterdir())) == 1
    assert submitter_opens >= DOCUMENTS
    assert [e for e in watch.read(timeout=0) if e.name] == [], "a file was opened after sending"
    assert submitter.wait(60) == 0, "the submitter did not end with its batch"

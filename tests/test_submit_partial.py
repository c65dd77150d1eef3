"""gearmand dies in the middle of a submit: what it accepted stays queued, the rest is failed.

A real gearmand (durable queue) is SIGKILLed on the wire: the submitter's connection sends
the first N jobs of a pipelined group, waits until gearmand has acknowledged those N, kills
gearmand, and only then sends the rest. So gearmand holds exactly the jobs it acknowledged,
and after a restart a worker meets exactly those.
"""

from __future__ import annotations

import secrets
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from importer import payload, submit
from importer.db import Document, lifecycle, open_database
from importer.db.engine import Database
from importer.db.models import Batch, RejectedJob
from importer.errors import GearmanUnavailable
from importer.gearman import send as sending
from importer.gearman.client import GearmanIO
from importer.gearman.connection import Connection
from importer.gearman.send import SendIncomplete
from importer.gearman.server import GearmandProcess
from importer.requeue import retry_batch
from importer.states import DocStatus

HEADER = struct.Struct("!4sII")
JOB_CREATED = 8
EMAIL = "ops@example.com"
KEYRING = [("k1", secrets.token_bytes(16))]


def _packets(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        _, _, size = HEADER.unpack_from(data, pos)
        out.append(data[pos : pos + HEADER.size + size])
        pos += HEADER.size + size
    return out


def _acknowledged(sock: socket.socket) -> int:
    """JOB_CREATED replies waiting in the socket, read with MSG_PEEK (left for the client)."""
    data = sock.recv(1 << 20, socket.MSG_PEEK)
    count, pos = 0, 0
    while pos + HEADER.size <= len(data):
        _, command, size = HEADER.unpack_from(data, pos)
        if pos + HEADER.size + size > len(data):
            break
        count += command == JOB_CREATED
        pos += HEADER.size + size
    return count


@dataclass
class Crash:
    """Kill gearmand during the `on_send`-th submit round trip, after `after` jobs of it."""

    gearmand: GearmandProcess
    on_send: int
    after: int
    sends: int = 0
    fired: bool = False


@pytest.fixture
def crash(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Crash]]:
    plans: list[Crash] = []
    original = Connection.send

    def send(conn: Connection, data: bytes) -> None:
        plan = next((p for p in plans if not p.fired), None)
        if plan is None or conn.server.port != plan.gearmand.port:
            return original(conn, data)
        packets = _packets(data)
        if not packets or HEADER.unpack_from(packets[0])[1] not in (18, 32, 34):
            return original(conn, data)  # not a submit (pings, status)
        plan.sends += 1
        if plan.sends < plan.on_send:
            return original(conn, data)
        plan.fired = True
        original(conn, b"".join(packets[: plan.after]))
        while plan.after and _acknowledged(conn.sock) < plan.after:
            pass
        plan.gearmand.kill()
        original(conn, b"".join(packets[plan.after :]))  # into a dead peer

    monkeypatch.setattr(Connection, "send", send)

    def arm(gearmand: GearmandProcess, *, on_send: int, after: int) -> Crash:
        plan = Crash(gearmand, on_send, after)
        plans.append(plan)
        return plan

    yield arm


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'importer.db'}")


def pdfs(folder: Path, count: int) -> Path:
    folder.mkdir()
    for n in range(count):
        (folder / f"doc-{n:03d}.pdf").write_bytes(b"%%PDF-1.4\n%% %d\n" % n + b"\n" * n)
    return folder


def run_submit(db: Database, gearmand: GearmandProcess, folder: Path) -> GearmanUnavailable:
    opts = submit.SubmitOptions(email=EMAIL)
    with (
        GearmanIO([gearmand.address], timeout=5) as gio,
        pytest.raises(GearmanUnavailable) as raised,
    ):
        submit.submit(db, gio, KEYRING, [str(folder)], opts)
    return raised.value


def documents(db: Database) -> list[Document]:
    with db.session() as s:
        return list(s.scalars(select(Document).order_by(Document.id)))


def held_jobs(gearmand: GearmandProcess) -> dict[str, bytes]:
    """Every job gearmand hands a worker (unique -> payload): CAN_DO, then GRAB_JOB_UNIQ."""
    jobs: dict[str, bytes] = {}
    with socket.create_connection(("127.0.0.1", gearmand.port), timeout=10) as sock:
        reader = sock.makefile("rb")

        def request(command: int, *args: bytes) -> tuple[int, list[bytes]]:
            body = b"\0".join(args)
            sock.sendall(b"\0REQ" + struct.pack("!II", command, len(body)) + body)
            _, reply, size = HEADER.unpack(reader.read(HEADER.size))
            return reply, reader.read(size).split(b"\0", 3)

        sock.sendall(b"\0REQ" + struct.pack("!II", 1, 6) + b"import")  # CAN_DO
        while True:
            reply, args = request(30)  # GRAB_JOB_UNIQ
            if reply == 10:  # NO_JOB
                return jobs
            assert reply == 31, reply  # JOB_ASSIGN_UNIQ: handle, function, unique, data
            jobs[args[2].decode()] = args[3]


def claim_as_worker(db: Database, jobs: dict[str, bytes]) -> list[lifecycle.ClaimRefusal]:
    """What a worker does with each job (workers/job.py handle): verify, then claim."""
    refusals = []
    for unique, data in jobs.items():
        job = payload.decode(data, keyring=KEYRING, ttl_seconds=3600)
        assert job.job_id == unique
        claimed = lifecycle.claim(
            db, job_id=job.job_id, path=job.file, email=job.email, owner="w:1", lease_seconds=60
        )
        if isinstance(claimed, lifecycle.ClaimRefusal):
            if claimed in lifecycle.FORGERY:
                lifecycle.record_rejection(db, unique=unique, reason=claimed.value, worker="w:1")
            refusals.append(claimed)
    return refusals


def check_partial(db: Database, gearmand: GearmandProcess, accepted: int, total: int) -> str:
    """The batch kept; what gearmand holds is queued with handles, and no worker calls it forged."""
    docs = documents(db)
    batch_ids = {d.batch_id for d in docs}
    assert len(batch_ids) == 1, "the batch was deleted (or split)"
    batch_id = batch_ids.pop()
    queued = [d for d in docs if d.status == DocStatus.queued]
    assert len(queued) == accepted
    assert all(d.gearman_handle and d.enqueued_at for d in queued)

    gearmand.start()  # the same durable queue
    jobs = held_jobs(gearmand)
    assert set(jobs) == {d.job_id for d in queued}
    assert claim_as_worker(db, jobs) == []
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RejectedJob)) == 0

    failed = [d for d in docs if d.status == DocStatus.failed]
    assert len(docs) == total and len(failed) == total - accepted
    assert all(d.gearman_handle is None and d.enqueued_at is None for d in failed)
    assert all(f"importer retry {batch_id}" in (d.error or "") for d in failed)
    assert all("gearmand was unreachable" in (d.error or "") for d in failed)
    with db.session() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.total == total
    return batch_id


def test_gearmand_dying_mid_group_keeps_what_it_accepted(
    db: Database,
    gearmand: GearmandProcess,
    crash: Callable[..., Crash],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(submit, "GROUP_SIZE", 10)
    folder = pdfs(tmp_path / "in", 45)
    plan = crash(gearmand, on_send=3, after=4)
    error = run_submit(db, gearmand, folder)
    assert plan.fired
    # groups 1 and 2 went through, 4 of group 3; group 4 was recorded while 3 was in flight
    batch_id = check_partial(db, gearmand, accepted=24, total=40)
    assert batch_id in error.message and "24 documents" in error.message
    assert "16 were not" in error.message and "after 40 files were read" in error.message
    assert f"importer retry {batch_id}" in error.message


def test_first_group_partly_accepted_keeps_the_batch(
    db: Database,
    gearmand: GearmandProcess,
    crash: Callable[..., Crash],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(submit, "GROUP_SIZE", 10)
    folder = pdfs(tmp_path / "in", 15)
    crash(gearmand, on_send=1, after=4)
    error = run_submit(db, gearmand, folder)
    batch_id = check_partial(db, gearmand, accepted=4, total=15)
    assert batch_id in error.message

    # once gearmand is back, retry sends the rest and the batch can finish
    with GearmanIO([gearmand.address]) as gio:
        assert retry_batch(db, gio, KEYRING, batch_id) == 11
    docs = documents(db)
    assert all(d.status == DocStatus.running for d in docs if d.gearman_handle and d.attempts)
    assert sum(d.status == DocStatus.queued and d.gearman_handle is not None for d in docs) == 11


def test_nothing_accepted_leaves_no_batch(
    db: Database, gearmand: GearmandProcess, crash: Callable[..., Crash], tmp_path: Path
) -> None:
    folder = pdfs(tmp_path / "in", 5)
    crash(gearmand, on_send=1, after=0)
    run_submit(db, gearmand, folder)
    assert documents(db) == []
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Batch)) == 0


def test_send_keeps_the_handles_gearmand_gave_before_dying(
    db: Database,
    gearmand: GearmandProcess,
    crash: Callable[..., Crash],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(submit, "GROUP_SIZE", 10)
    folder = pdfs(tmp_path / "in", 15)
    crash(gearmand, on_send=1, after=4)
    run_submit(db, gearmand, folder)
    batch_id = check_partial(db, gearmand, accepted=4, total=15)
    # a retry of the 11 failed, 5 per round trip, dies after 3 of them: those 3 keep their
    # handle and mark; the 2 refused and the 6 of the groups never sent lose the mark
    monkeypatch.setattr(sending, "GROUP_SIZE", 5)
    crash(gearmand, on_send=1, after=3)
    with GearmanIO([gearmand.address], timeout=5) as gio, pytest.raises(SendIncomplete) as raised:
        retry_batch(db, gio, KEYRING, batch_id)
    assert raised.value.sent == 3
    retried = [d for d in documents(db) if d.status == DocStatus.queued and not d.attempts]
    assert len(retried) == 11
    assert sum(bool(d.gearman_handle and d.enqueued_at) for d in retried) == 3
    assert sum(d.gearman_handle is None and d.enqueued_at is None for d in retried) == 8


def test_duplicates_in_different_groups_are_skipped(
    db: Database, gearmand: GearmandProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit, "GROUP_SIZE", 10)
    folder = pdfs(tmp_path / "in", 25)
    (folder / "zz-copy.pdf").write_bytes((folder / "doc-003.pdf").read_bytes())
    with GearmanIO([gearmand.address]) as gio:
        result = submit.submit(db, gio, KEYRING, [str(folder)], submit.SubmitOptions(email=EMAIL))
    assert (result.submitted, result.skipped) == (25, 1)
    assert len(documents(db)) == 25


def test_gearmand_dying_while_files_join_an_open_batch_keeps_the_batch_open(
    db: Database, gearmand: GearmandProcess, crash: Callable[..., Crash], tmp_path: Path
) -> None:
    """`importer watch` adds files to a batch it closes later: a submission of which
    gearmand accepted nothing deletes neither the batch nor its earlier documents, and
    leaves its total unset (open)."""
    opts = submit.SubmitOptions(email=EMAIL)
    confine, walked = submit.walk([str(pdfs(tmp_path / "in", 6))], opts, ())
    files = list(walked)
    with db.session() as s:
        s.add(Batch(id="open-batch", email=EMAIL))
    with GearmanIO([gearmand.address], timeout=5) as gio:
        submit.submit_files(db, gio, KEYRING, confine, files[:3], opts, into="open-batch")
        crash(gearmand, on_send=1, after=0)
        with pytest.raises(GearmanUnavailable):
            submit.submit_files(db, gio, KEYRING, confine, files[3:], opts, into="open-batch")
    docs = documents(db)
    assert len(docs) == 6 and {d.batch_id for d in docs} == {"open-batch"}
    assert [d.status for d in docs].count(DocStatus.queued) == 3
    assert all("gearmand was unreachable" in (d.error or "") for d in docs[3:])
    with db.session() as s:
        batch = s.get(Batch, "open-batch")
        assert batch is not None and batch.total == 0 and batch.finished_at is None

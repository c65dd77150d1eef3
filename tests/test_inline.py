"""Inline payloads (`--inline`): the file's bytes travel in the job, checked, capped.

Real gearmand, real `importer worker` processes, real documents from sample_pdfs/. The
workers' IMPORTER_ALLOWED_ROOTS names an empty directory, so a worker that opened the
submitter's path would be refused; and the files are deleted once they are sent.
"""

from __future__ import annotations

import json
import mailbox
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from importer import inline, payload
from importer.db import Document, Page, open_database
from importer.db.models import RejectedJob
from importer.errors import PayloadRejected
from importer.gearman.client import GearmanIO, JobSpec
from importer.requeue import requeue_stale
from importer.states import DocStatus
from importer.submit import SubmitOptions, submit
from tests.conftest import SAMPLES, cer, importer, settings_from

TEXTS = ["born_digital", "mixed", "scanned_memo"]


def _expected(name: str) -> str:
    return (SAMPLES / f"{name}.txt").read_text()


def _texts(db_url: str) -> dict[str, tuple[DocStatus, str | None, str]]:
    """File stem -> (status, error, pages joined by form feed)."""
    db = open_database(db_url)
    out = {}
    with db.session() as s:
        for doc in s.scalars(select(Document)):
            pages = s.scalars(
                select(Page.text).where(Page.document_id == doc.id).order_by(Page.number)
            ).all()
            out[Path(doc.path).stem] = (doc.status, doc.error, "\f".join(pages))
    return out


def _start(*args: str, env: dict[str, str], log: Path | None = None) -> subprocess.Popen[str]:
    """The command in the background: its stdout piped, its stderr to `log` (a worker
    logs every job: a pipe nobody reads would fill up and stop it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "importer", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if log is None else log.open("w"),
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _worker_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A worker that may read nothing of the submitter's: its only root is empty."""
    empty = tmp_path / "worker-root"
    empty.mkdir(exist_ok=True)
    return {**env, "IMPORTER_ALLOWED_ROOTS": str(empty)}


def _padded(target: Path, name: str, size: int) -> Path:
    """A sample PDF grown to `size` bytes with random bytes after its end (poppler reads
    it as before; the random tail makes every copy's sha256 its own)."""
    data = (SAMPLES / f"{name}.pdf").read_bytes()
    target.write_bytes(data + secrets.token_bytes(max(0, size - len(data))))
    return target


def _wait_until_gearmand_holds_the_batch(env: dict[str, str], url: str) -> None:
    """A document is marked sent just before its job goes out: wait for the jobs."""
    with open_database(url).session() as s:
        uniques = list(s.scalars(select(Document.job_id)))
    gio = GearmanIO.from_settings(settings_from(env))
    try:
        deadline = time.monotonic() + 60
        while not all(st.known for st in gio.status_by_unique(uniques).values()):
            assert time.monotonic() < deadline, "the submitter never sent every job"
            time.sleep(0.05)
    finally:
        gio.close()


@pytest.mark.slow
def test_inline_batch_is_imported_after_its_files_are_deleted(
    env: dict[str, str], tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in TEXTS:
        shutil.copy(SAMPLES / f"{name}.pdf", inbox / f"{name}.pdf")
    env["IMPORTER_ALLOWED_ROOTS"] = str(inbox)
    url = settings_from(env).resolved_database_url
    sub = _start("submit", str(inbox), "--email", "ops@example.com", "--inline", "--json", env=env)
    db = open_database(url)
    deadline = time.monotonic() + 60
    while True:  # every document sent (the cap is far above these files)
        with db.session() as s:
            sent = s.scalar(
                select(func.count()).select_from(Document).where(Document.enqueued_at.is_not(None))
            )
        if sent == len(TEXTS):
            break
        assert sub.poll() is None and time.monotonic() < deadline, sub.communicate()
        time.sleep(0.05)
    _wait_until_gearmand_holds_the_batch(env, url)  # else a --burst worker may find none
    shutil.rmtree(inbox)  # the workers never see these paths
    worker = _start("worker", "--burst", env=_worker_env(env, tmp_path), log=tmp_path / "w.log")
    try:
        out, _ = sub.communicate(timeout=300)
        assert sub.returncode == 0, out
        assert worker.wait(120) == 0
    finally:
        worker.kill()
        sub.kill()
    assert json.loads(out)["submitted"] == len(TEXTS)
    docs = _texts(url)
    for name in TEXTS:
        status, error, text = docs[name]
        assert status == DocStatus.done, (name, error)
        assert cer(_expected(name), text) <= 0.02, name
    box = mailbox.Maildir(Path(env["IMPORTER_DATA_DIR"]) / "mail", create=False)
    assert len(list(box)) == 1
    spool = Path(env["IMPORTER_DATA_DIR"]) / "inline"
    assert not [p for p in spool.rglob("*") if p.is_file()], "an inline file was left behind"


def test_tampered_inline_jobs_are_rejected_and_nothing_is_stored(
    env: dict[str, str], tmp_path: Path, gearmand_factory
) -> None:  # type: ignore[no-untyped-def]
    """Real documents are recorded (their real jobs go to another gearmand); forged jobs
    with their real ids reach the workers: only the byte checks can refuse them."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in TEXTS:
        shutil.copy(SAMPLES / f"{name}.pdf", inbox / f"{name}.pdf")
    settings = settings_from(env)
    db = open_database(settings.resolved_database_url)
    ring = settings.keyring()
    elsewhere = gearmand_factory()
    with GearmanIO([elsewhere.address]) as gio:
        opts = SubmitOptions(email="ops@example.com", inline=True, inline_until_finished=False)
        submit(db, gio, ring, [str(inbox)], opts)
    with db.session() as s:
        docs = {Path(d.path).stem: (d.job_id, d.path) for d in s.scalars(select(Document))}

    def job(name: str, content: bytes) -> bytes:
        job_id, path = docs[name]
        return payload.encode(job_id, path, "ops@example.com", keyring=ring, content=content)

    real = {name: (inbox / f"{name}.pdf").read_bytes() for name in TEXTS}
    changed = bytearray(job("born_digital", real["born_digital"]))
    changed[-100] ^= 0xFF  # a byte of the PDF changed after signing
    cut = job("mixed", real["mixed"])[:-1]  # one byte short
    header = job("scanned_memo", b"x" * len(real["scanned_memo"])).partition(b"\n")[0]
    sealed = job("born_digital", real["scanned_memo"]).partition(b"\n")[2]
    other = header + b"\n" + sealed  # sealed for another job
    forged = {"born_digital": bytes(changed), "mixed": cut, "scanned_memo": other}
    with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
        gio.submit_background([JobSpec(docs[n][0], data) for n, data in forged.items()])
    importer("worker", "--burst", env=_worker_env(env, tmp_path), check=True, timeout=120)
    with db.session() as s:
        reasons = {r.unique: r.reason for r in s.scalars(select(RejectedJob))}
        assert s.scalar(select(func.count()).select_from(Page)) == 0
        statuses = set(s.scalars(select(Document.status)))
    assert statuses == {DocStatus.queued}
    for name in TEXTS:
        assert "sealed part does not open" in reasons[docs[name][0]], name
    status = json.loads(importer("status", "--json", env=env, check=True).stdout)
    assert status["rejected_jobs"] == 3


@pytest.mark.slow
def test_a_file_over_the_inline_limit_fails_and_the_rest_imports(
    env: dict[str, str], tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("born_digital", "mixed"):
        shutil.copy(SAMPLES / f"{name}.pdf", inbox / f"{name}.pdf")
    _padded(inbox / "big.pdf", "born_digital", 2 * 2**20 + 1)
    env["IMPORTER_MAX_INLINE_MB"] = "2"
    run = importer(
        "run", str(inbox), "--email", "ops@example.com", "--inline", "--workers", "2",
        "--json", env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # finished, one failed
    docs = _texts(settings_from(env).resolved_database_url)
    status, error, _ = docs["big"]
    assert status == DocStatus.failed
    assert "IMPORTER_MAX_INLINE_MB" in (error or "") and "shared" in (error or "")
    for name in ("born_digital", "mixed"):
        assert docs[name][0] == DocStatus.done, docs[name][1]
        assert cer(_expected(name), docs[name][2]) <= 0.02, name
    assert json.loads(run.stdout)["failed"] == 1


@pytest.mark.slow
def test_inline_bytes_on_gearmand_stay_under_the_cap(env: dict[str, str], tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    size = 400_000
    count = 8
    for i in range(count):
        _padded(inbox / f"doc{i}.pdf", "born_digital", size)
    env["IMPORTER_ALLOWED_ROOTS"] = str(inbox)
    env["IMPORTER_INLINE_IN_FLIGHT_MB"] = "1"  # two of these files, not three
    cap = 2**20
    worker = _start("worker", env=_worker_env(env, tmp_path), log=tmp_path / "w.log")
    sub = _start("submit", str(inbox), "--email", "ops@example.com", "--inline", "--wait", env=env)
    most = 0
    try:
        with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
            while sub.poll() is None:
                status = gio.admin_status().get("import")
                queued = status.queued if status else 0  # running ones included
                most = max(most, queued)
                assert queued * size <= cap, f"{queued} inline jobs of {size} bytes on gearmand"
                time.sleep(0.02)
        assert sub.returncode == 0, sub.communicate()
    finally:
        sub.kill()
        worker.terminate()
        worker.wait(60)
    assert most >= 1
    docs = _texts(settings_from(env).resolved_database_url)
    assert len(docs) == count
    assert all(status == DocStatus.done for status, _, _ in docs.values()), docs
    assert os.path.exists(inbox)


def test_the_framing_checks_its_bytes_before_anything_reads_them() -> None:
    ring = [("k1", b"s" * 32)]
    data = payload.encode("j-1", "/in/a.pdf", "ops@example.com", keyring=ring, content=b"%PDF-1")
    header, _, sealed = data.partition(b"\n")
    assert b"%PDF-1" not in sealed and len(header) <= payload.MAX_PAYLOAD_BYTES
    job = payload.decode_job(data, keyring=ring, ttl_seconds=60)
    assert job.content is not None and bytes(job.content) == b"%PDF-1"
    plain = payload.encode("j-1", "/in/a.pdf", "ops@example.com", keyring=ring)
    assert payload.decode_job(plain, keyring=ring, ttl_seconds=60).content is None
    for forged, reason in [
        (header, "no sealed part"),
        (plain + b"\n%PDF-1", "does not open"),
        (data + b"x", "does not open"),
        (data[:-1], "does not open"),
    ]:
        with pytest.raises(PayloadRejected, match=reason):
            payload.decode_job(forged, keyring=ring, ttl_seconds=60)


def test_a_resend_without_the_file_goes_to_the_live_sender_or_fails_with_the_fix(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The reaper re-sends an inline document whose file this host cannot read: while
    the batch's sender is alive it hands the document back to it; once the sender is gone
    it records the document failed, naming `importer retry BATCH`."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", inbox / "a.pdf")
    settings = settings_from(env)
    db = open_database(settings.resolved_database_url)
    ring = settings.keyring()
    with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
        opts = SubmitOptions(email="ops@example.com", inline=True, inline_until_finished=False)
        result = submit(db, gio, ring, [str(inbox)], opts)
        assert result.batch_id is not None
        shutil.rmtree(inbox)
        with db.session() as s:  # as after a transient failure: queued, due, not on gearmand
            s.execute(update(Document).values(enqueued_at=None))
        inline.renew_sender(db, result.batch_id)
        requeue_stale(db, gio, ring)
        with db.session() as s:
            doc = s.scalars(select(Document)).one()
            assert (doc.status, doc.enqueued_at, doc.error) == (DocStatus.queued, None, None)
        inline.release_sender(db, result.batch_id)
        requeue_stale(db, gio, ring)
    with db.session() as s:
        doc = s.scalars(select(Document)).one()
    assert doc.status == DocStatus.failed
    assert f"importer retry {result.batch_id}" in (doc.error or ""), doc.error
    assert "cannot read" in (doc.error or "")

"""A file changed after it was submitted is never imported under the recorded hash.

The swaps are made as reported: the file rewritten in place with another PDF padded to
the same size, between `submit` and `worker --burst`; and during an inline submit that
must feed its batch, before the sender reads the file it has not sent yet.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from importer.db import Document, Page, open_database
from tests.conftest import SAMPLES, importer, settings_from

EMAIL = "ops@example.com"


def _padded(name: str, size: int) -> bytes:
    """A sample PDF grown to `size` bytes (poppler reads it as before)."""
    data = (SAMPLES / f"{name}.pdf").read_bytes()
    return data + secrets.token_bytes(size - len(data))


def _overwrite(path: Path, data: bytes) -> None:
    """Rewrite the file in place: the same inode, the same single name."""
    with path.open("r+b") as f:
        f.write(data)


def test_a_same_size_swap_before_the_worker_fails_as_changed(
    env: dict[str, str], tmp_path: Path
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    invoice = inbox / "invoice.pdf"
    genuine = _padded("born_digital", 600_000)
    invoice.write_bytes(genuine)
    env["IMPORTER_ALLOWED_ROOTS"] = str(inbox)
    first = json.loads(
        importer("submit", str(invoice), "--email", EMAIL, "--json", env=env, check=True).stdout
    )
    _overwrite(invoice, _padded("mixed", len(genuine)))  # another PDF, the same size
    importer("worker", "--burst", env=env, check=True, timeout=120)
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        doc = s.scalars(select(Document).where(Document.batch_id == first["batch_id"])).one()
        assert s.scalar(select(func.count()).select_from(Page)) == 0, "the other file was read"
    assert (doc.status.value, doc.error_kind) == ("failed", "changed"), doc.error
    assert "changed since it was submitted" in (doc.error or "")
    invoice.write_bytes(genuine)  # the real file again: not "already imported"
    again = json.loads(
        importer("submit", str(invoice), "--email", EMAIL, "--json", env=env, check=True).stdout
    )
    assert (again["submitted"], again["skipped"]) == (1, 0)


def test_a_file_changed_before_the_inline_sender_reads_it_fails_as_changed(
    env: dict[str, str], tmp_path: Path
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    size = 700_000
    for name in ("a", "b"):
        (inbox / f"{name}.pdf").write_bytes(_padded("born_digital", size))
    env["IMPORTER_INLINE_IN_FLIGHT_MB"] = "1"  # one of them on gearmand at a time
    empty = tmp_path / "worker-root"
    empty.mkdir()
    db = open_database(settings_from(env).resolved_database_url)
    sub = subprocess.Popen(
        [sys.executable, "-m", "importer", "submit", str(inbox), "--email", EMAIL,
         "--inline", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    worker = None
    try:
        assert sub.stderr is not None
        notice = sub.stderr.readline()
        assert "1 documents still to send" in notice, notice
        assert "IMPORTER_INLINE_IN_FLIGHT_MB=1" in notice
        with db.session() as s:
            waiting = s.scalars(select(Document.path).where(Document.enqueued_at.is_(None))).one()
        _overwrite(Path(waiting), _padded("mixed", size))
        worker = subprocess.Popen(
            [sys.executable, "-m", "importer", "worker"],
            env={**env, "IMPORTER_ALLOWED_ROOTS": str(empty)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = sub.communicate(timeout=120)  # it used to hand the file back to itself
        assert sub.returncode == 0, out
        deadline = time.monotonic() + 120
        while True:  # the other one, sent, read by the worker
            with db.session() as s:
                left = s.scalar(
                    select(func.count())
                    .select_from(Document)
                    .where(Document.status.in_(["queued", "running"]))
                )
            if not left:
                break
            assert time.monotonic() < deadline, "the document sent was never done"
            time.sleep(0.1)
    finally:
        sub.kill()
        if worker is not None:
            worker.terminate()
            worker.wait(60)
    with db.session() as s:
        docs = {d.path: d for d in s.scalars(select(Document))}
    changed = docs.pop(waiting)
    assert (changed.status.value, changed.error_kind) == ("failed", "changed"), changed.error
    assert "changed since it was submitted" in (changed.error or "")
    (other,) = docs.values()
    assert other.status.value == "done", other.error


def test_submit_inline_returns_once_its_jobs_are_on_gearmand(
    env: dict[str, str], tmp_path: Path
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    for name in ("born_digital", "mixed"):
        shutil.copy(SAMPLES / f"{name}.pdf", inbox / f"{name}.pdf")
    sub = importer(
        "submit", str(inbox), "--email", EMAIL, "--inline", "--json", env=env, timeout=60
    )
    assert sub.returncode == 0, sub.stderr
    assert json.loads(sub.stdout)["submitted"] == 2
    assert "still to send" not in sub.stderr
    shutil.rmtree(inbox)  # the script moves the files away, then starts workers
    empty = tmp_path / "worker-root"
    empty.mkdir()
    worker_env = {**env, "IMPORTER_ALLOWED_ROOTS": str(empty)}
    importer("worker", "--burst", env=worker_env, check=True, timeout=180)
    with open_database(settings_from(env).resolved_database_url).session() as s:
        statuses = {os.path.basename(d.path): d.status.value for d in s.scalars(select(Document))}
    assert statuses == {"born_digital.pdf": "done", "mixed.pdf": "done"}

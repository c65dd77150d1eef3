"""The reaper: expired leases come back, and a file that kills whole workers ends dead."""

from __future__ import annotations

import json
import mailbox
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from importer.db import Document, open_database
from importer.db.models import utcnow
from importer.gearman.client import GearmanIO
from importer.requeue import requeue_stale
from importer.states import DocStatus
from tests.conftest import SAMPLES, importer, settings_from
from tests.mail_parts import plain_text


def expire(db, job_ids: list[str], attempts: int) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        s.execute(
            update(Document)
            .where(Document.job_id.in_(job_ids))
            .values(
                status=DocStatus.running,
                attempts=attempts,
                lease_owner="gone-host:1",
                lease_expires_at=utcnow() - timedelta(seconds=1),
                enqueued_at=utcnow() - timedelta(minutes=5),
            )
        )


def test_expired_leases_are_requeued_until_attempts_run_out(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("born_digital.pdf", "scanned_memo.pdf"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    batch = json.loads(
        importer(
            "submit", str(folder), "--email", "ops@example.com", "--json", env=env, check=True
        ).stdout
    )["batch_id"]
    settings = settings_from(env)
    db = open_database(settings.resolved_database_url)
    with db.session() as s:
        docs = {Path(d.path).name: d.job_id for d in s.scalars(select(Document))}
    # one worker died once on born_digital; the other file has killed a worker 3 times
    expire(db, [docs["born_digital.pdf"]], attempts=1)
    expire(db, [docs["scanned_memo.pdf"]], attempts=3)
    with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
        report = requeue_stale(db, gio, settings.keyring(), max_attempts=3)
    assert report.lease_expired == 2 and report.dead == 1 and report.enqueued == 1
    with db.session() as s:
        status = {Path(d.path).name: d for d in s.scalars(select(Document))}
    assert status["scanned_memo.pdf"].status == DocStatus.dead
    assert "died on each of 3 attempts" in (status["scanned_memo.pdf"].error or "")
    assert status["born_digital.pdf"].status == DocStatus.queued

    importer("worker", "--burst", env=env, check=True)
    out = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    assert out["batches"][0]["done"] == 1 and out["batches"][0]["dead"] == 1
    assert out["batches"][0]["finished_at"] is not None
    box = mailbox.Maildir(Path(env["IMPORTER_DATA_DIR"]) / "mail", create=False)
    assert len(box) == 1
    body = plain_text(next(iter(box)))
    assert "scanned_memo.pdf" in body and "died on each of 3 attempts" in body

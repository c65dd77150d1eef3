"""What another local user (uid 65534, as the attack was made) can reach of ours.

Each test acts through `setpriv --reuid=65534` against the real processes: the data dir
an operator made 0755, a rogue worker on our gearmand (the dashboard's: test_dashboard).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from importer.db import Document, open_database
from importer.db.models import RejectedJob, utcnow
from importer.gearman.client import GearmanIO
from importer.metrics import render
from importer.requeue import HELD, requeue_stale
from tests.conftest import SAMPLES, importer, settings_from, submit_json
from tests.other_user import AS_NOBODY, as_nobody


def test_a_data_dir_made_0755_is_made_private_before_anything_is_written(
    shared_tmp: Path, env: dict[str, str]
) -> None:
    data = shared_tmp / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    env["IMPORTER_DATA_DIR"] = str(data)
    del env["IMPORTER_SECRET_KEYS"]  # generated into the data dir: everything is local
    folder = shared_tmp / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", folder / "a.pdf")
    env["IMPORTER_ALLOWED_ROOTS"] = str(folder)
    submit_json(folder, env)
    assert os.stat(data).st_mode & 0o777 == 0o700
    stolen = as_nobody("cat", str(data / "secret_keys"))
    assert stolen.returncode != 0 and "Permission denied" in stolen.stderr
    listed = as_nobody("ls", str(data))
    assert listed.returncode != 0


_ROGUE = """
import sys, time, gearman
worker = gearman.GearmanWorker([sys.argv[1]])
worker.set_client_id("rogue-65534")
def hold(_worker, job):
    print("took", job.unique.decode(), flush=True)
    time.sleep(3600)
worker.register_task(b"import", hold)
worker.work()
"""


def test_a_job_a_rogue_worker_holds_is_sent_again_and_its_old_id_refused(
    env: dict[str, str], shared_tmp: Path
) -> None:
    """uid 65534 registers `import` on our gearmand, takes the job and holds it; the
    reaper sends the document again under a new job id, a real worker imports it, and the
    old job handed back later is refused without touching the document."""
    folder = shared_tmp / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", folder / "report.pdf")
    env["IMPORTER_ALLOWED_ROOTS"] = str(folder)
    batch = submit_json(folder, env)["batch_id"]
    settings = settings_from(env)
    db = open_database(settings.resolved_database_url)
    with db.session() as s:
        old_id = s.scalars(select(Document.job_id)).one()
    rogue = subprocess.Popen(
        [*AS_NOBODY, sys.executable, "-c", _ROGUE, env["IMPORTER_GEARMAN_SERVERS"]],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert rogue.stdout is not None
        assert rogue.stdout.readline().split() == ["took", old_id]
        with db.session() as s:  # sent long enough ago for the reaper to ask gearmand
            s.execute(update(Document).values(enqueued_at=utcnow() - timedelta(minutes=5)))
        with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
            first = requeue_stale(db, gio, settings.keyring(), claim_seconds=1)
            assert first.held_unclaimed == 0  # a claim may still come: only a deadline noted
            time.sleep(1.5)
            second = requeue_stale(db, gio, settings.keyring(), claim_seconds=1)
        assert second.held_unclaimed == 1 and second.enqueued == 1
        importer("worker", "--burst", env=env, check=True)
        shown = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
        assert shown["batches"][0]["done"] == 1
        new_id = shown["documents"][0]["job_id"]
        assert new_id != old_id
        with db.session() as s:
            held = s.scalars(select(RejectedJob).where(RejectedJob.kind == HELD)).one()
        assert held.unique == old_id and "rogue-65534" in (held.worker or "")
        doctor = json.loads(importer("doctor", "--json", env=env).stdout)
        named = [c for c in doctor if c["name"] == "held jobs"]
        assert (
            len(named) == 1 and "rogue-65534" in named[0]["detail"] and old_id in named[0]["detail"]
        )
        scraped = render(settings, db)[0].decode()
        assert any(
            line.startswith("importer_jobs_held_total{") and "rogue-65534" in line
            for line in scraped.splitlines()
        ), scraped
    finally:
        rogue.kill()  # its connection closes: gearmand hands the old job back
        rogue.wait()
    importer("worker", "--burst", env=env, check=True)
    after = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    assert after["batches"][0]["done"] == 1 and after["documents"][0]["job_id"] == new_id
    assert after["rejected_jobs"] == 1  # the old job: no document of that id
    db.engine.dispose()

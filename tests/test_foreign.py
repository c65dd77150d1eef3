"""Jobs from other clients: signed path jobs the database does not know, sent straight to
a real gearmand and read by a real `importer worker --burst`.

Each refusal is seen from outside: the job's outcome in `status --json`, the count of
rejected jobs, and (with inotify) that a refused file was never opened.
"""

from __future__ import annotations

import json
import mailbox
import shutil
import time
from pathlib import Path

import pytest
from inotify_simple import INotify, flags

from importer import payload
from importer.dashboard.app import build_app
from importer.dashboard.readonly import make_read_only
from importer.db import open_database
from importer.db.models import RejectedJob
from importer.gearman.client import GearmanIO, JobSpec
from importer.requeue import HELD
from tests.conftest import SAMPLES, importer, settings_from
from tests.test_dashboard import TOKEN, _asgi

TTL = 3600
EMAIL = "ops@example.com"


@pytest.fixture
def files(tmp_path: Path, env: dict[str, str]) -> dict[str, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    for name in ("a", "b", "c", "d"):
        shutil.copy(SAMPLES / "born_digital.pdf", root / f"{name}.pdf")
    shutil.copy(SAMPLES / "born_digital.pdf", outside / "secret.pdf")
    env["IMPORTER_ALLOWED_ROOTS"] = str(root)
    env["IMPORTER_JOB_TTL_SECONDS"] = str(TTL)
    return {"root": root, "secret": outside / "secret.pdf"}


def send(env: dict[str, str], jobs: list[tuple[str, bytes]]) -> None:
    with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
        gio.submit_background([JobSpec(unique=u, data=d) for u, d in jobs])


def signed(env: dict[str, str], job_id: str, path: Path | str, **kw: object) -> bytes:
    ring = settings_from(env).keyring()
    return payload.encode(job_id, str(path), EMAIL, keyring=ring, **kw)  # type: ignore[arg-type]


def status(env: dict[str, str], batch: str | None = None) -> dict:  # type: ignore[type-arg]
    args = ["status", "--json", "--all"] if batch else ["status", "--json"]
    return json.loads(importer(*args, *([batch] if batch else []), env=env, check=True).stdout)


def work(env: dict[str, str]) -> None:
    importer("worker", "--burst", env=env, check=True)


def mails(env: dict[str, str]) -> list[mailbox.MaildirMessage]:
    box = Path(env["IMPORTER_DATA_DIR"]) / "mail"
    return list(mailbox.Maildir(box, create=False)) if (box / "new").is_dir() else []


def rejections(env: dict[str, str]) -> dict[str, str]:
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        return {r.unique or "": r.reason for r in s.query(RejectedJob) if r.kind != HELD}


def test_a_named_batch_is_made_on_first_sight_and_mails_once_complete(
    env: dict[str, str], files: dict[str, Path]
) -> None:
    root = files["root"]
    # two of the batch's three documents, and one job with a batch of its own
    send(
        env,
        [
            ("php-a", signed(env, "php-a", root / "a.pdf", batch=("scans-1", 3))),
            ("php-b", signed(env, "php-b", root / "b.pdf", batch=("scans-1", 3))),
            ("php-own", signed(env, "php-own", root / "d.pdf")),
        ],
    )
    work(env)
    batch = status(env, "scans-1")
    assert batch["batches"][0]["done"] == 2
    assert batch["batches"][0]["finished_at"] is None  # two of its three: not done yet
    assert {d["job_id"]: d["status"] for d in batch["documents"]} == {
        "php-a": "done",
        "php-b": "done",
    }
    own = [b for b in status(env)["batches"] if b["id"] != "scans-1"]
    assert len(own) == 1 and own[0]["done"] == 1 and own[0]["finished_at"] is not None
    assert [m["To"] for m in mails(env)] == [EMAIL]  # the batch of its own only

    # the third completes the batch: its one e-mail; a fourth does not fit in it
    send(
        env,
        [
            ("php-c", signed(env, "php-c", root / "c.pdf", batch=("scans-1", 3))),
            ("php-x", signed(env, "php-x", root / "c.pdf", batch=("scans-1", 3))),
        ],
    )
    work(env)
    batch = status(env, "scans-1")["batches"][0]
    assert (batch["done"], batch["total"]) == (3, 3) and batch["finished_at"] is not None
    assert len(mails(env)) == 2
    assert "already holds its 3 documents" in rejections(env)["php-x"]
    assert status(env)["rejected_jobs"] == 1

    # the dashboard lists it, and its documents, as any batch
    settings = settings_from(env)
    db = make_read_only(open_database(settings.resolved_database_url))
    app = build_app(settings, db, token=TOKEN)
    code, _, index = _asgi(app, "/")
    assert code == 200 and "scans-1" in index
    code, _, page = _asgi(app, "/batches/scans-1")
    assert code == 200 and all(name in page for name in ("a.pdf", "b.pdf", "c.pdf"))
    db.engine.dispose()


def test_jobs_that_do_not_fit_their_batch_are_refused(
    env: dict[str, str], files: dict[str, Path]
) -> None:
    root = files["root"]
    ring = settings_from(env).keyring()
    other = payload.encode("php-2", str(root / "b.pdf"), "else@example.com", keyring=ring,
                           batch=("scans-2", 2))  # fmt: skip
    send(
        env,
        [
            ("php-1", signed(env, "php-1", root / "a.pdf", batch=("scans-2", 2))),
            ("php-2", other),  # another e-mail address
            ("php-3", signed(env, "php-3", root / "c.pdf", batch=("scans-2", 5))),
            ("php-4", signed(env, "php-4", root / "c.pdf", batch=("../etc", 1))),
            ("php-5", signed(env, "php-5", root / "c.pdf", batch=("scans-3", 0))),
            ("php?6", signed(env, "php?6", root / "c.pdf")),
        ],
    )
    work(env)
    reasons = rejections(env)
    assert "another e-mail address" in reasons["php-2"]
    assert "not batch_size 5" in reasons["php-3"]
    assert "is not 1-32 letters" in reasons["php-4"]
    assert "batch_size 0 is not between" in reasons["php-5"]
    assert "job id 'php?6' is not 1-64 letters" in reasons["php?6"]
    assert status(env)["rejected_jobs"] == 5
    assert [b["id"] for b in status(env)["batches"]] == ["scans-2"]


def test_a_signed_job_outside_the_roots_is_recorded_failed_and_never_opened(
    env: dict[str, str], files: dict[str, Path]
) -> None:
    ino = INotify()
    ino.add_watch(str(files["secret"]), flags.OPEN | flags.ACCESS)
    link = files["root"] / "link.pdf"
    link.symlink_to(files["secret"])
    send(
        env,
        [
            ("php-out", signed(env, "php-out", files["secret"], batch=("scans-4", 3))),
            ("php-link", signed(env, "php-link", link, batch=("scans-4", 3))),
            ("php-gone", signed(env, "php-gone", files["root"] / "gone.pdf", batch=("scans-4", 3))),
        ],
    )
    work(env)
    assert not ino.read(timeout=0), "a job outside the roots opened the file"
    report = status(env, "scans-4")
    docs = {d["job_id"]: d for d in report["documents"]}
    assert docs["php-out"]["status"] == "failed"
    assert docs["php-out"]["error_kind"] == "outside-roots"
    assert "outside IMPORTER_ALLOWED_ROOTS" in docs["php-out"]["error"]
    assert docs["php-link"]["error_kind"] == "link"
    assert docs["php-gone"]["error_kind"] == "missing"
    assert report["batches"][0]["finished_at"] is not None  # all three finished: its e-mail
    assert len(mails(env)) == 1


def test_forged_unsigned_expired_replayed_and_retired_jobs_stay_refused(
    env: dict[str, str], files: dict[str, Path]
) -> None:
    root = files["root"]
    ring = settings_from(env).keyring()
    now = time.time()
    send(env, [("php-done", signed(env, "php-done", root / "a.pdf"))])
    work(env)
    assert status(env)["batches"][0]["done"] == 1

    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:  # as the reaper leaves a job taken at gearmand and never claimed
        s.add(RejectedJob(unique="php-held", reason="taken", worker="rogue", kind=HELD))
    wrong = [(ring[0][0], b"not-the-real-secret-at-all-0123456789")]
    send(
        env,
        [
            ("legacy", f"{root / 'b.pdf'}||:||{EMAIL}".encode()),
            ("php-forged", payload.encode("php-forged", str(root / "b.pdf"), EMAIL, keyring=wrong)),
            ("php-old", signed(env, "php-old", root / "b.pdf", now=now - TTL - 60)),
            ("php-held", signed(env, "php-held", root / "b.pdf")),
            ("php-inline", signed(env, "php-inline", root / "b.pdf", content=b"%PDF-1.7 x")),
            # the finished job again, and its id with another path
            ("php-done", signed(env, "php-done", root / "a.pdf")),
        ],
    )
    work(env)
    send(env, [("php-done", signed(env, "php-done", root / "b.pdf"))])
    work(env)
    reasons = rejections(env)
    assert "not signed JSON" in reasons["legacy"]
    assert "signature does not match" in reasons["php-forged"]
    assert "expired" in reasons["php-old"]
    assert "retired" in reasons["php-held"]
    assert "no document recorded" in reasons["php-inline"]
    report = status(env)
    assert report["rejected_jobs"] == 6  # the five above and the finished id, another path
    assert report["replayed_jobs"] == 1
    assert [b["total"] for b in report["batches"]] == [1]

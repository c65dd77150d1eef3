"""A rogue client that reaches gearmand: forged, expired, replayed and escaping jobs.

None of them may open a file (watched with inotify), each is counted, and a legitimate
job after them still completes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from inotify_simple import INotify, flags

from importer import payload
from importer.gearman.client import GearmanIO, JobSpec
from tests.conftest import SAMPLES, importer, settings_from, submit_json

TTL = 3600


@pytest.fixture
def layout(tmp_path: Path, env: dict[str, str]) -> dict[str, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", root / "legit.pdf")
    shutil.copy(SAMPLES / "born_digital.pdf", outside / "secret.pdf")
    (root / "link.pdf").symlink_to(outside / "secret.pdf")
    env["IMPORTER_ALLOWED_ROOTS"] = str(root)
    env["IMPORTER_JOB_TTL_SECONDS"] = str(TTL)
    return {"root": root, "outside": outside, "secret": outside / "secret.pdf"}


def watch(path: Path) -> INotify:
    ino = INotify()
    ino.add_watch(str(path), flags.OPEN | flags.ACCESS)
    return ino


def opened(ino: INotify) -> bool:
    return bool(ino.read(timeout=0))


def rogue_submit(env: dict[str, str], jobs: list[tuple[str, bytes]]) -> None:
    with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
        gio.submit_background([JobSpec(unique=u, data=d) for u, d in jobs])


def status(env: dict[str, str], batch: str | None = None) -> dict:  # type: ignore[type-arg]
    args = ["status", "--json"] + ([batch] if batch else [])
    return json.loads(importer(*args, env=env, check=True).stdout)


def test_forged_jobs_open_nothing_and_are_counted(
    env: dict[str, str], layout: dict[str, Path]
) -> None:
    settings = settings_from(env)
    ring = settings.keyring()
    secret = str(layout["secret"])

    # a real document, imported once: its payload is what an attacker would capture
    first = submit_json(str(layout["root"] / "legit.pdf"), env)
    importer("worker", "--burst", env=env, check=True)
    doc = status(env, first["batch_id"])["documents"][0]
    assert doc["status"] == "done"
    captured = payload.encode(doc["job_id"], doc["path"], "ops@example.com", keyring=ring)

    ino = watch(layout["secret"])
    now = time.time()
    wrong = [(ring[0][0], b"not-the-real-secret-at-all")]
    forged = [
        ("legacy-1", f"{secret}||:||ops@example.com".encode()),
        (
            "unsigned-1",
            json.dumps(
                {"job_id": "unsigned-1", "file": secret, "email": "ops@example.com"}
            ).encode(),
        ),
        ("badsig-1", payload.encode("badsig-1", secret, "ops@example.com", keyring=wrong)),
        (
            "expired-1",
            payload.encode(
                "expired-1", secret, "ops@example.com", keyring=ring, now=now - TTL - 60
            ),
        ),
        (
            "unknownkid-1",
            payload.encode("unknownkid-1", secret, "ops@example.com", keyring=[("k9", b"x" * 32)]),
        ),
        # a real job id with another path: the database's path wins, so it is refused
        (doc["job_id"], payload.encode(doc["job_id"], secret, "ops@example.com", keyring=ring)),
    ]
    # signed with the real key, no such document, a path outside the roots: recorded failed
    # as another client's job (workers.foreign), its file never opened
    invented = ("j-invented", payload.encode("j-invented", secret, "ops@example.com", keyring=ring))
    rogue_submit(env, [*forged, invented])
    importer("worker", "--burst", env=env, check=True)
    # the replay of the captured payload goes in after the forged one with the same unique
    rogue_submit(env, [(doc["job_id"], captured)])
    importer("worker", "--burst", env=env, check=True)

    assert not opened(ino), "a forged job opened the file outside the roots"
    assert status(env)["rejected_jobs"] == len(forged)
    assert status(env)["replayed_jobs"] == 1  # the captured payload: valid, its document done
    assert status(env, first["batch_id"])["documents"][0]["status"] == "done"
    (other,) = [b["id"] for b in status(env)["batches"] if b["id"] != first["batch_id"]]
    (refused,) = status(env, other)["documents"]
    assert (refused["job_id"], refused["error_kind"]) == ("j-invented", "outside-roots")

    # a legitimate job after all of that still completes
    second = submit_json(str(layout["root"] / "legit.pdf"), env, "--force")
    importer("worker", "--burst", env=env, check=True)
    assert status(env, second["batch_id"])["batches"][0]["done"] == 1
    assert not opened(ino)


def test_forgeries_of_a_real_queued_job_are_refused_by_the_signature_checks(
    env: dict[str, str], layout: dict[str, Path]
) -> None:
    """Forged jobs that name a real queued document, its path and its e-mail: only the
    payload's own checks can refuse them, and each is refused for its own reason."""
    from sqlalchemy import select

    from importer.db.engine import open_database
    from importer.db.models import RejectedJob

    settings = settings_from(env)
    ring = settings.keyring()
    submitted = submit_json(str(layout["root"] / "legit.pdf"), env)
    doc = status(env, submitted["batch_id"])["documents"][0]
    job = (doc["job_id"], doc["path"], "ops@example.com")
    now = time.time()
    header = json.loads(payload.encode(*job, keyring=ring).partition(b"\n")[0])
    header["iat"] += 1
    changed = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    # the real job's genuine header over the sealed part of a job the thief made for itself
    mine = payload.encode("j-thief", job[1], "thief@example.com", keyring=ring).partition(b"\n")[2]
    moved = payload.encode(*job, keyring=ring).partition(b"\n")[0] + b"\n" + mine
    fields = {"email": job[2], "file": job[1], "iat": int(now), "job_id": job[0], "kid": ring[0][0]}
    v1 = {**fields, "v": 1}
    v1["sig"] = payload._mac(
        ring[0][1], json.dumps(v1, sort_keys=True, separators=(",", ":")).encode()
    )
    forged = {
        "f-badsig": payload.encode(*job, keyring=[(ring[0][0], b"not-the-real-secret-at-all")]),
        "f-unknownkid": payload.encode(*job, keyring=[("k9", b"x" * 32)]),
        "f-expired": payload.encode(*job, keyring=ring, now=now - TTL - 60),
        "f-future": payload.encode(*job, keyring=ring, now=now + 3600),
        "f-changed": changed + b"\n" + payload.encode(*job, keyring=ring).partition(b"\n")[2],
        "f-moved": moved,
        "f-v1": json.dumps(v1, sort_keys=True, separators=(",", ":")).encode(),
    }
    # Each goes under a unique of its own, so gearmand does not merge it with the real job.
    rogue_submit(env, list(forged.items()))
    importer("worker", "--burst", env=env, check=True)

    with open_database(settings.resolved_database_url).session() as s:
        reasons = {u: r for u, r in s.execute(select(RejectedJob.unique, RejectedJob.reason))}
    assert set(reasons) == set(forged)
    assert "signature does not match" in reasons["f-badsig"]
    assert "unknown key id 'k9'" in reasons["f-unknownkid"]
    assert "expired" in reasons["f-expired"]
    assert "issued in the future" in reasons["f-future"]
    assert "signature does not match" in reasons["f-changed"]
    assert "sealed part does not open" in reasons["f-moved"]
    assert "version 1 (file and e-mail in clear) is no longer accepted" in reasons["f-v1"]
    # the real job, delivered alongside, was read once and is done
    assert status(env, submitted["batch_id"])["documents"][0]["status"] == "done"
    assert status(env)["rejected_jobs"] == len(forged)


def test_symlink_escape_is_refused_by_submitter_and_worker(
    env: dict[str, str], layout: dict[str, Path]
) -> None:
    ino = watch(layout["secret"])
    proc = importer(
        "submit", str(layout["root"] / "link.pdf"), "--email", "ops@example.com", env=env
    )
    assert proc.returncode == 2
    assert "outside IMPORTER_ALLOWED_ROOTS" in proc.stderr

    # walking the root skips the link; the real file is queued
    result = submit_json(str(layout["root"]), env)
    assert result["submitted"] == 1
    # the recorded file is swapped for a link outside the roots before a worker gets to it
    legit = layout["root"] / "legit.pdf"
    legit.unlink()
    legit.symlink_to(layout["secret"])
    importer("worker", "--burst", env=env, check=True)
    doc = status(env, result["batch_id"])["documents"][0]
    assert doc["status"] == "failed"
    assert "refused" in doc["error"]
    assert not opened(ino)


def test_worker_refuses_a_recorded_path_outside_the_roots(
    env: dict[str, str], layout: dict[str, Path]
) -> None:
    """A document recorded before the roots were narrowed is not read."""
    env_wide = dict(env)
    env_wide["IMPORTER_ALLOWED_ROOTS"] = str(layout["outside"])
    result = submit_json(str(layout["secret"]), env_wide)
    ino = watch(layout["secret"])
    importer("worker", "--burst", env=env, check=True)
    doc = status(env, result["batch_id"])["documents"][0]
    assert doc["status"] == "failed" and "outside IMPORTER_ALLOWED_ROOTS" in doc["error"]
    assert not opened(ino)


def test_a_worker_without_roots_refuses_to_start(env: dict[str, str]) -> None:
    del env["IMPORTER_ALLOWED_ROOTS"]
    proc = importer("worker", "--burst", env=env)
    assert proc.returncode == 2
    assert "IMPORTER_ALLOWED_ROOTS is not set" in proc.stderr
    assert "--allow-any-path" in proc.stderr
    importer("worker", "--burst", "--allow-any-path", env=env, check=True)


def test_secret_keys_file_is_private(tmp_path: Path) -> None:
    from importer.config import Settings

    settings = Settings(data_dir=tmp_path / "d")
    ring = settings.keyring()
    assert ring and len(ring[0][1]) >= 32
    assert os.stat(tmp_path / "d" / "secret_keys").st_mode & 0o777 == 0o600
    assert Settings(data_dir=tmp_path / "d").keyring() == ring

"""Jobs on a real gearmand: what a rogue worker of another uid takes, and a job over the bound.

The rogue is a raw Gearman worker (the system Python, sockets only) run as uid 65534,
as the attack on loopback was made: it registers `import`, takes one job and prints it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from importer.db.engine import open_database
from importer.db.models import RejectedJob
from importer.gearman.client import GearmanIO, JobSpec
from tests.conftest import SAMPLES, importer, settings_from, submit_json

ROGUE = r"""
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
def send(cmd, *args):
    body = b"\0".join(args)
    s.sendall(b"\0REQ" + struct.pack("!II", cmd, len(body)) + body)
def read(n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            sys.exit(1)
        out += chunk
    return out
send(1, b"import")  # CAN_DO
while True:
    send(30)  # GRAB_JOB_UNIQ
    _, cmd, size = struct.unpack("!4sII", read(12))
    body = read(size)
    if cmd == 31:  # JOB_ASSIGN_UNIQ: handle, function, unique, data
        sys.stdout.buffer.write(body.split(b"\0", 3)[3])
        break
    send(4)  # PRE_SLEEP, woken by NOOP
    read(12)
"""


def test_a_rogue_worker_of_another_uid_learns_nothing_from_an_inline_job(
    env: dict[str, str], tmp_path: Path
) -> None:
    rogue = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "/usr/bin/python3", "-c", ROGUE, env["IMPORTER_GEARMAN_SERVERS"]],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd="/",
    )  # fmt: skip
    target = tmp_path / "board-minutes-confidential.pdf"
    pdf = (SAMPLES / "born_digital.pdf").read_bytes()
    target.write_bytes(pdf)
    email = "the-chairwoman@example.com"
    submit = subprocess.Popen(
        [sys.executable, "-m", "importer", "submit", str(target), "--email", email, "--inline"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        taken, _ = rogue.communicate(timeout=120)
    finally:
        submit.kill()
        submit.wait()
        rogue.kill()
    assert rogue.returncode == 0 and len(taken) > len(pdf), "the rogue took no job"
    assert str(target).encode() not in taken and target.name.encode() not in taken
    assert email.encode() not in taken
    windows = {pdf[i : i + 64] for i in range(len(pdf) - 63)}
    assert not any(taken[i : i + 64] in windows for i in range(len(taken) - 63))
    header = json.loads(taken.partition(b"\n")[0])
    assert set(header) == {"v", "job_id", "kid", "iat", "sig"}


def test_a_job_over_the_bound_is_refused_unread_and_the_next_one_runs(
    env: dict[str, str],
) -> None:
    env["IMPORTER_MAX_INLINE_MB"] = "1"
    with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
        gio.submit_background([JobSpec(unique="j-huge", data=b"\0" * (3 * 2**20))])
    batch = submit_json(SAMPLES / "born_digital.pdf", env)["batch_id"]
    importer("worker", "--burst", env=env, check=True)
    report = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    assert report["rejected_jobs"] == 1
    assert report["documents"][0]["status"] == "done"
    with open_database(settings_from(env).resolved_database_url).session() as s:
        (reason,) = s.execute(select(RejectedJob.reason)).scalars()
    assert "is over the largest job a worker accepts" in reason and "discarded unread" in reason

"""A host that refuses the document walls, made real: the worker runs under a seccomp
filter that refuses unshare and mount with EPERM (tests/deny_namespaces.py), as Docker's
default profile does in a container without CAP_SYS_ADMIN."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES, importer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the walls are built as root here")

DENY = [sys.executable, str(ROOT / "tests" / "deny_namespaces.py")]
IMPORTER = str(Path(sys.executable).parent / "importer")


def _denied(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    import subprocess

    proc = subprocess.run(
        [*DENY, IMPORTER, *args], env=env, capture_output=True, text=True, timeout=180
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_a_worker_whose_walls_cannot_stand_refuses_to_start(env: dict[str, str]) -> None:
    importer("submit", str(SAMPLES / "born_digital.pdf"), "--email", "a@example.com", env=env,
             check=True)  # fmt: skip
    code, _, err = _denied("worker", "--burst", env=env)
    assert code == 2, err
    walls = ("network namespace", "PID, mount and IPC namespaces", "user namespace")
    fixes = ("Operation not permitted", "cap_add SYS_ADMIN", "IMPORTER_WEAK_ISOLATION=1")
    for named in (*walls, *fixes):
        assert named in err, (named, err[-2000:])
    status = json.loads(importer("status", "--json", env=env, check=True).stdout)
    assert status["batches"][0]["queued"] == 1, "a refused worker took the document"


def test_the_opt_out_serves_and_doctor_and_metrics_call_it_a_failure(
    env: dict[str, str],
) -> None:
    env["IMPORTER_WEAK_ISOLATION"] = "1"
    batch = json.loads(
        importer(
            "submit",
            str(SAMPLES / "born_digital.pdf"),
            "--email",
            "a@example.com",
            "--json",
            env=env,
            check=True,
        ).stdout  # fmt: skip
    )["batch_id"]
    code, _, err = _denied("worker", "--burst", env=env)
    assert code == 0, err
    assert "IMPORTER_WEAK_ISOLATION=1: no network namespace" in err
    status = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    assert status["documents"][0]["status"] == "done"
    code, out, _ = _denied("doctor", "--json", env=env)
    found = {c["name"]: c for c in json.loads(out)}["isolation"]
    assert code == 1 and found["state"] == "fail", found
    assert "IMPORTER_WEAK_ISOLATION=1" in found["detail"]
    assert "no network" not in found["detail"].split("standing:")[1], "doctor claims a wall"
    assert "hidden roots" not in {c["name"] for c in json.loads(out)}


def test_metrics_report_the_opt_out(tmp_path: Path) -> None:
    from importer.config import Settings
    from importer.db.engine import open_database
    from importer.gearman.address import free_port
    from importer.metrics import render

    for weak, value in ((True, 1.0), (False, 0.0)):
        settings = Settings(
            data_dir=tmp_path, weak_isolation=weak, gearman_servers=f"127.0.0.1:{free_port()}"
        )
        db = open_database(settings.resolved_database_url)
        try:
            body = render(settings, db)[0].decode()
        finally:
            db.engine.dispose()
        assert f"importer_weak_isolation {value}" in body


def test_a_trial_of_the_walls_dies_with_a_check_cut_short(tmp_path: Path) -> None:
    """SIGTERM to `importer run` while it tries the walls ends the check: the trial child
    it forked is killed and reaped, not left behind."""
    import signal
    import time

    from workers import walls

    pid_file = tmp_path / "trial.pid"

    def slow_trial() -> None:
        pid_file.write_text(str(os.getpid()))
        time.sleep(30)

    class CutShort(Exception):
        pass

    def cut_short(_signum: int, _frame: object) -> None:
        raise CutShort

    previous = signal.signal(signal.SIGALRM, cut_short)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(CutShort):
            walls._tried(slow_trial)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    trial = int(pid_file.read_text())
    assert not Path(f"/proc/{trial}").exists(), "the trial child outlived the check"

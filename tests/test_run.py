"""`importer run`: the README's main job, with a private gearmand it starts and stops."""

from __future__ import annotations

import json
import mailbox
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from importer.gearman.address import free_port
from tests.conftest import SAMPLES


def run_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env["IMPORTER_DATA_DIR"] = str(tmp_path / "data")
    return env


def gearmand_processes(data_dir: Path) -> list[str]:
    """gearmand processes whose queue is in this data dir."""
    out = subprocess.run(["pgrep", "-a", "-x", "gearmand"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if str(data_dir) in line]


@pytest.mark.slow
def test_run_imports_samples_with_a_private_gearmand(tmp_path: Path) -> None:
    env = run_env(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "importer",
            "run",
            str(SAMPLES),
            "--email",
            "you@example.com",
            "--workers",
            "2",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr  # broken.pdf fails on purpose
    summary = json.loads(proc.stdout)
    pdfs = len(list(SAMPLES.glob("*.pdf")))
    assert summary["total"] == pdfs and summary["done"] == pdfs - 1 and summary["failed"] == 1
    assert summary["pages_done"] > pdfs
    assert "private gearmand" in proc.stderr
    assert gearmand_processes(tmp_path / "data") == [], "run left its gearmand running"
    box = mailbox.Maildir(tmp_path / "data" / "mail", create=False)
    assert len(box) == 1
    assert (tmp_path / "data" / "gearmand-queue.sqlite").exists()


def test_run_refuses_an_explicit_gearmand_that_is_down(tmp_path: Path) -> None:
    env = run_env(tmp_path)
    env["IMPORTER_GEARMAN_SERVERS"] = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "importer", "run", str(SAMPLES), "--email", "you@example.com"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 3
    assert "IMPORTER_GEARMAN_SERVERS" in proc.stderr


def test_sigterm_stops_the_runs_workers_and_private_gearmand(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(6):  # long enough to be mid-import when the signal comes
        (folder / f"scan-{n}.pdf").write_bytes((SAMPLES / "scanned_letter.pdf").read_bytes())
    proc = subprocess.Popen(
        [sys.executable, "-m", "importer", "run", str(folder), "--email", "you@example.com",
         "--workers", "1"],
        env=run_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    children: list[int] = []
    try:
        for line in proc.stderr:
            if "started a private gearmand" in line:
                break
        deadline = time.monotonic() + 30
        while not gearmand_processes(tmp_path / "data") or not _children(proc.pid):
            assert time.monotonic() < deadline, "no gearmand and worker to stop"
            time.sleep(0.1)
        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        left = gearmand_processes(tmp_path / "data")
    finally:
        proc.kill()
        proc.wait()
        for pid in _children_alive(children):
            os.kill(pid, signal.SIGKILL)  # a failed run's leftovers: this test's own
    assert left == [], "SIGTERM left run's gearmand running"
    assert _children_alive(children) == []
    assert code == 128 + signal.SIGTERM


def _children_alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_a_stop_signal_inside_a_library_waits_for_our_own_code() -> None:
    """SystemExit raised inside logging's at-fork hook was swallowed there and left the
    logging lock held: the run then hung for good. The signal is taken only where the
    importer's own code runs; in a library it is tried again shortly (SIGALRM)."""
    from types import SimpleNamespace

    from importer.run import _stopped_by_signals

    in_logging = SimpleNamespace(f_globals={"__name__": "logging"}, f_code=None, f_back=None)
    in_run = SimpleNamespace(f_globals={"__name__": "importer.run"}, f_code=None, f_back=None)
    with _stopped_by_signals():
        stop, again = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM)
        assert callable(stop) and callable(again)
        stop(signal.SIGTERM, in_logging)  # not raised there
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0, "no second try is due"
        again(signal.SIGALRM, in_logging)  # still in the library: later again
        with pytest.raises(SystemExit) as stopped:
            again(signal.SIGALRM, in_run)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_a_stop_signal_while_a_worker_starts_leaves_no_worker_unstopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's handler raised SystemExit between a worker's fork and its record in the
    supervisor: nobody stopped that worker, and multiprocessing's exit hook waited on it for
    ever (the SIGTERM test hung so, sent just as the workers started). The exit waits for
    the record."""
    from multiprocessing.process import BaseProcess

    from importer.config import Settings
    from importer.run import _stopped_by_signals
    from workers.supervisor import Supervisor, WorkerOptions

    # the signal lands just after the fork, in code the handler counts as the importer's own
    ours: dict[str, Any] = {"__name__": "workers.supervisor", "os": os, "signal": signal}
    ours["start"] = BaseProcess.start
    ours["time"] = time
    exec("def start_then_stop(proc):\n    start(proc)\n    os.kill(os.getpid(), signal.SIGTERM)\n"
         "def next_step():\n    time.sleep(5)", ours)  # fmt: skip
    monkeypatch.setattr(BaseProcess, "start", ours["start_then_stop"])
    sup = Supervisor(
        Settings(data_dir=tmp_path / "data", weak_isolation=True), WorkerOptions(concurrency=1)
    )
    try:
        with pytest.raises(SystemExit), _stopped_by_signals():
            sup._start(0)
            ours["next_step"]()  # the signal is taken here, in the run's next step
        assert 0 in sup.children, "a worker was forked that the supervisor does not know"
    finally:
        monkeypatch.undo()
        sup.stop(timeout=10)
        for child in multiprocessing.active_children():
            child.kill()
            child.join()

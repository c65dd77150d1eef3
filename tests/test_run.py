"""`importer run`: the README's main job, with a private gearmand it starts and stops."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
from pathlib import Path

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

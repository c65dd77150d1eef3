"""The PHP example client (`examples/php/submit.php`) with Debian's php-cli and php-gearman,
against a real gearmand and a real `importer worker`: signed jobs are imported and their
page progress is read with jobStatus(); the classic unsigned job is refused and counted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from importer.db import open_database
from importer.db.models import Document, Page
from tests.conftest import ROOT, SAMPLES, _unavailable, cer, importer, settings_from

CLIENT = ROOT / "examples" / "php" / "submit.php"


@pytest.fixture
def php() -> str:
    found = shutil.which("php")
    if found is None:
        _unavailable("php is not installed: apt-get install php-cli php-gearman")
    modules = subprocess.run([str(found), "-m"], capture_output=True, text=True, check=True)
    if "gearman" not in modules.stdout.split():
        _unavailable("PHP's gearman extension is not installed: apt-get install php-gearman")
    return str(found)


def run_php(php: str, env: dict[str, str], *args: str) -> list[dict]:  # type: ignore[type-arg]
    proc = subprocess.run(
        [php, str(CLIENT), "--email", "ops@example.com", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def status(env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(importer("status", "--json", *args, env=env, check=True).stdout)


@pytest.mark.slow
def test_a_php_client_imports_follows_progress_and_its_unsigned_job_is_refused(
    php: str, env: dict[str, str], tmp_path: Path
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(SAMPLES / "scanned_letter.pdf", scans / "letter.pdf")
    shutil.copy(SAMPLES / "born_digital.pdf", scans / "manual.pdf")
    env["IMPORTER_ALLOWED_ROOTS"] = str(scans)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "importer", "worker", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        jobs = run_php(php, env, "--batch", "php-1", str(scans / "letter.pdf"),
                       str(scans / "manual.pdf"))  # fmt: skip
        legacy = run_php(php, env, "--legacy", str(scans / "letter.pdf"))
        deadline = time.monotonic() + 120
        while status(env)["rejected_jobs"] < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=120)
        log.close()

    # page progress, read by PHP's jobStatus while the scanned letter was read
    progress = {Path(j["file"]).name: j["progress"] for j in jobs}
    assert progress["letter.pdf"], (tmp_path / "worker.log").read_text()[-3000:]
    assert {d for _, d in progress["letter.pdf"]} == {2}
    assert [n for n, _ in progress["letter.pdf"]] == sorted(n for n, _ in progress["letter.pdf"])

    report = status(env, "php-1")
    batch = report["batches"][0]
    assert (batch["done"], batch["total"]) == (2, 2) and batch["finished_at"] is not None
    assert {d["job_id"] for d in report["documents"]} == {j["job_id"] for j in jobs}

    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        text = "\f".join(
            s.scalars(
                select(Page.text)
                .join(Document)
                .where(Document.path == str(scans / "letter.pdf"))
                .order_by(Page.number)
            )
        )
    assert cer((SAMPLES / "scanned_letter.txt").read_text(), text) <= 0.02

    assert legacy[0]["job_id"] is None and legacy[0]["handle"]
    assert status(env)["rejected_jobs"] == 1  # the seed's file||:||email job
    assert [b["id"] for b in status(env)["batches"]] == ["php-1"]

"""Progress that answers "when will it be done": the recent rate and the ETA, computed from
timestamps (no sleeping), and what `run` and `status --watch` print with them."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from importer.console import SafeConsole
from importer.db.engine import open_database
from importer.db.models import Batch, Document
from importer.live_progress import (
    BatchProgress,
    Estimate,
    RunningDocument,
    SubmitDisplay,
    block,
    read_progress,
    summary_line,
)
from importer.progress import Rate, Remaining, eta_seconds, format_duration, format_rate
from importer.states import DocStatus
from tests.conftest import SAMPLES, importer

ESC = "\x1b"
HOSTILE = f"[bold]r{ESC}[2J{ESC}]52;c;cHduZWQ={ESC}\\w\n.pdf"
HOSTILE_SHOWN = "[bold]r\\x1b[2J\\x1b]52;c;cHduZWQ=\\x1b\\w\\n.pdf"
LINE = re.compile(
    r"batch \S+: (\d+)/(\d+) documents, [\d,]+(?:/[\d,]+)? pages, "
    r"(—|[\d,.]+) pages/s, ETA (—|[\dhms ]+), (\d+) failed"
)


def test_the_rate_is_the_last_minutes_not_the_average_since_the_start() -> None:
    rate = Rate(window=60, min_span=5)
    for second in range(0, 121):  # 10 pages/s for a minute, then 1 page/s
        rate.add(float(second), 10 * min(second, 60) + max(second - 60, 0))
    assert rate.per_second() == pytest.approx(1.0)


def test_no_rate_until_the_samples_span_enough_time() -> None:
    rate = Rate(window=60, min_span=5)
    assert rate.per_second() is None
    rate.add(100.0, 0)
    assert rate.per_second() is None
    rate.add(104.9, 50)
    assert rate.per_second() is None
    rate.add(105.0, 50)
    assert rate.per_second() == pytest.approx(10.0)


def test_a_count_that_goes_down_is_no_progress_and_time_never_runs_backwards() -> None:
    rate = Rate(window=60, min_span=5)
    rate.add(0.0, 40)
    rate.add(10.0, 30)  # pages read again after a retry
    assert rate.per_second() == 0.0
    with pytest.raises(ValueError, match="older"):
        rate.add(9.0, 31)


def test_stalled_workers_give_no_eta_instead_of_infinity() -> None:
    rate = Rate(window=60, min_span=5)
    for second in range(0, 200, 2):
        rate.add(float(second), 500 if second < 100 else 700)  # nothing for 100 s
    assert rate.per_second() == 0.0
    left = Remaining(documents=3, pages_left=12, uncounted=0, mean_pages=4.0)
    assert eta_seconds(left, rate.per_second()) is None
    assert eta_seconds(left, None) is None


def test_eta_from_pages_left_known_or_estimated_at_the_mean() -> None:
    known = Remaining(documents=2, pages_left=30, uncounted=0, mean_pages=None)
    assert known.pages_known and eta_seconds(known, 3.0) == pytest.approx(10.0)
    # 2 counted documents with 6 pages left, 8 not counted at 4.5 pages each
    mixed = Remaining(documents=10, pages_left=6, uncounted=8, mean_pages=4.5)
    assert not mixed.pages_known and mixed.pages == pytest.approx(42.0)
    assert eta_seconds(mixed, 2.0) == pytest.approx(21.0)
    nothing_counted = Remaining(documents=5, pages_left=0, uncounted=5, mean_pages=None)
    assert nothing_counted.pages is None and eta_seconds(nothing_counted, 2.0) is None
    done = Remaining(documents=0, pages_left=0, uncounted=0, mean_pages=None)
    assert eta_seconds(done, None) == 0.0


def test_durations_and_rates_read_at_a_glance() -> None:
    assert [format_duration(s) for s in (None, 0.4, 45, 370, 3725, 2 * 86400 + 4 * 3600)] == [
        "—",
        "0s",
        "45s",
        "6m 10s",
        "1h 02m",
        "2d 04h",
    ]
    assert format_rate(None, "pages") == "— pages/s"
    assert format_rate(14.24, "pages") == "14.2 pages/s"
    assert format_rate(0.348, "pages") == "0.35 pages/s"
    assert format_rate(1204.2, "files") == "1,204 files/s"


def test_the_work_left_is_read_from_the_database(database_url: str) -> None:
    db = open_database(database_url)
    batch = f"b-{uuid.uuid4().hex[:12]}"
    docs = [  # (status, pages, pages_done)
        (DocStatus.done, 4, 4),
        (DocStatus.done, 6, 6),
        (DocStatus.failed, None, 0),
        (DocStatus.dead, 5, 2),  # out of attempts: failed, its pages not a document's mean
        (DocStatus.running, 10, 3),
        (DocStatus.running, None, 0),
        *[(DocStatus.queued, None, 0)] * 3,
    ]
    with db.session() as s:
        s.add(Batch(id=batch, email="a@example.com", total=len(docs)))
        for status, pages, done in docs:
            job = f"j-{uuid.uuid4().hex}"
            s.add(
                Document(
                    batch_id=batch, path=f"/in/{job}.pdf", sha256=job[:64], job_id=job,
                    status=status, pages=pages, pages_done=done,
                )
            )  # fmt: skip
    p = read_progress(db, batch, None)
    assert (p.total, p.finished, p.failed, p.pages_done) == (9, 4, 2, 15)
    assert [(d.pages_done, d.pages) for d in p.running] == [(3, 10), (0, None)]
    assert p.running_total == 2 and p.pages_total is None
    # 7 pages left of the counted running one; 4 uncounted at (4 + 6 + 10) / 3 pages each
    assert p.remaining.documents == 5 and p.remaining.pages_left == 7
    assert p.remaining.uncounted == 4 and p.remaining.mean_pages == pytest.approx(20 / 3)


def _progress(running: tuple[RunningDocument, ...], running_total: int) -> BatchProgress:
    return BatchProgress(
        batch_id="20260101-120000-a1b2c3",
        total=500,
        finished=120,
        failed=2,
        pages_done=1830,
        remaining=Remaining(documents=380, pages_left=9, uncounted=370, mean_pages=15.0),
        running=running,
        running_total=running_total,
    )


def test_a_terminal_shows_the_running_documents_names_escaped() -> None:
    running = (
        RunningDocument(f"/in/{HOSTILE}", "j-1", 3, 12),
        RunningDocument("/in/scan-018.pdf", "j-2", 0, None),
    )
    p = _progress(running, running_total=14)
    est = Estimate(pages_per_second=14.2, eta=370.0)
    assert summary_line(p, est) == (
        "batch 20260101-120000-a1b2c3: 120/500 documents, 1,830 pages, 14.2 pages/s,"
        " ETA 6m 10s, 2 failed"
    )
    screen = io.StringIO()
    SafeConsole(file=screen, width=120, color_system=None).print(block(p, est, 83.0))
    lines = screen.getvalue().splitlines()
    assert ESC not in screen.getvalue()
    assert "1m 23s" in lines[0] and "ETA 6m 10s" in lines[0]
    assert lines[1:] == [
        f"  {HOSTILE_SHOWN}  page 3/12",
        "  scan-018.pdf  counting pages",
        "  and 12 more",
    ]


def test_submit_off_a_terminal_says_files_per_second_every_few_seconds() -> None:
    now = [1000.0]
    log = io.StringIO()
    console = SafeConsole(file=log, width=200)
    with SubmitDisplay(console, every=10, quiet=False, clock=lambda: now[0]) as progress:
        for tick in range(1, 321):  # 0.25 s apart: 40 files/s for 15 s, then 400 files/s
            now[0] = 1000.0 + tick / 4
            progress(10 * tick if tick <= 60 else 600 + 100 * (tick - 60), 0)
    lines = log.getvalue().splitlines()
    assert len(lines) == 8  # at 10, 20, ... 80 s
    assert lines[0] == "submitting: 400 files seen, 0 queued, 40.0 files/s"
    assert lines[1] == "submitting: 2,600 files seen, 0 queued, 130 files/s"  # since the start
    assert lines[-1] == "submitting: 26,600 files seen, 0 queued, 400 files/s"  # the last minute
    quiet = io.StringIO()  # `submit --json`
    with SubmitDisplay(SafeConsole(file=quiet), quiet=True, clock=lambda: now[0]) as progress:
        now[0] += 60
        progress(10, 10)
    assert quiet.getvalue() == ""


def _copies(inbox: Path, names: list[str]) -> None:
    """Scanned samples under these names, each a distinct file (one byte more)."""
    scans = ("scanned_letter.pdf", "rotated.pdf", "scanned_memo.pdf")
    inbox.mkdir()
    for number, name in enumerate(names):
        body = (SAMPLES / scans[number % len(scans)]).read_bytes()
        (inbox / name).write_bytes(body + b"\n%" + str(number).encode() + b"\n")


def _run_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env["IMPORTER_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.mark.slow
def test_run_off_a_terminal_prints_a_line_with_rate_and_eta_then_the_summary(
    tmp_path: Path,
) -> None:
    env = _run_env(tmp_path)
    _copies(tmp_path / "inbox", [f"scan-{n:03d}.pdf" for n in range(4)])  # 7 pages
    run = importer(
        "run", str(tmp_path / "inbox"), "--email", "ops@example.com", "--workers", "1",
        "--progress-every", "1", env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [LINE.fullmatch(line) for line in run.stderr.splitlines() if line.startswith("batch")]
    assert len(lines) >= 3 and all(lines), run.stderr
    assert ESC not in run.stderr, "a plain log got terminal redraws"
    rated = [m for m in lines if m and m[3] != "—" and m[4] != "—" and m[1] != m[2]]
    assert rated, f"no line had a rate and an ETA before the end:\n{run.stderr}"
    assert lines[-1] and lines[-1][1] == lines[-1][2] == "4" and lines[-1][5] == "0"
    assert "4 of 4 documents imported, 7 pages, 0 failed" in run.stdout

    batch = json.loads(importer("status", "--json", env=env, check=True).stdout)["batches"][0]
    watched = importer("status", batch["id"], "--watch", env=env, timeout=30)
    assert watched.returncode == 0, watched.stderr
    assert "scan-003.pdf" in watched.stdout and ESC not in watched.stdout
    as_json = importer("status", batch["id"], "--watch", "--json", env=env, timeout=30)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["batches"][0]["done"] == 4


@pytest.mark.slow
def test_run_on_a_terminal_redraws_running_documents_and_json_stays_alone_on_stdout(
    tmp_path: Path,
) -> None:
    env = _run_env(tmp_path)
    _copies(tmp_path / "inbox", [HOSTILE, "plain.pdf"])
    shutil.copy(SAMPLES / "broken.pdf", tmp_path / "inbox" / "broken.pdf")
    screen, terminal = pty.openpty()
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(screen, 65536)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = subprocess.run(
        [sys.executable, "-m", "importer", "run", str(tmp_path / "inbox"),
         "--email", "ops@example.com", "--workers", "1", "--json"],
        env={**env, "COLUMNS": "160"}, stdout=subprocess.PIPE, stderr=terminal,
        stdin=subprocess.DEVNULL, text=True, timeout=300,
    )  # fmt: skip
    os.close(terminal)
    reader.join(10)
    os.close(screen)
    drawn = seen.decode(errors="replace")
    assert proc.returncode == 1, drawn  # broken.pdf fails on purpose
    summary = json.loads(proc.stdout)
    assert summary["total"] == 3 and summary["failed"] == 1
    assert re.search(r"page \d+/\d+", drawn), drawn
    assert "3/3 documents" in drawn and "1 failed" in drawn
    assert HOSTILE_SHOWN in drawn and "52;c;" not in drawn.replace(HOSTILE_SHOWN, "")

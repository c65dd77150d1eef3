"""What `importer watch` costs: a pass over a folder of files already imported, and the
delay from a file settling to its job being on gearmand.

    .venv/bin/python scripts/watch_bench.py --files 10000

Starts a private gearmand and a SQLite database in a temporary directory (no worker: the
documents first submitted are then marked done, as if imported), and prints:
- a pass by a watch restarted over FILES files it decided on before (stat and look up);
- a first pass by another watch (another address) over the same FILES files, imported by
  someone else: each is opened, hashed and skipped by its sha256, as submit does;
- for DROPS files dropped one at a time into a watched folder, the seconds from the
  moment each settled (its last write plus --settle) to its job handle from gearmand
  being in the database, with inotify and with --poll 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select, update

from importer.config import Settings
from importer.db.engine import open_database
from importer.db.models import Document
from importer.gearman.client import GearmanIO
from importer.gearman.server import GearmandProcess
from importer.states import DocStatus
from importer.submit import SubmitOptions
from importer.watch.command import Watcher, WatchOptions

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = (ROOT / "sample_pdfs" / "born_digital.pdf").read_bytes()
SETTLE = 1.0


def make_files(folder: Path, count: int) -> None:
    for number in range(count):
        sub = folder / f"d{number // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"scan-{number:05d}.pdf").write_bytes(SAMPLE + f"% {number}\n".encode())


def timed_pass(settings: Settings, folder: Path, email: str) -> tuple[float, int, int]:
    """Seconds of one pass by a fresh watcher, with --settle 0; (seconds, files, unchanged)."""
    db = open_database(settings.resolved_database_url)
    gio = GearmanIO.from_settings(settings)
    try:
        opts = WatchOptions(SubmitOptions(email=email), settle=0, batch_every=600)
        watcher = Watcher(settings, db, gio, [str(folder)], opts)
        start = time.perf_counter()
        report = watcher.scan()
        return time.perf_counter() - start, report.files, report.unchanged
    finally:
        gio.close()
        db.engine.dispose()


def settle_delays(env: dict[str, str], folder: Path, drops: int, *extra: str) -> list[float]:
    """Seconds from each dropped file settling to its gearmand handle being stored."""
    folder.mkdir()
    db = open_database(env["IMPORTER_DATABASE_URL"])
    watch = subprocess.Popen(
        [sys.executable, "-m", "importer", "watch", str(folder), "--email",
         f"delay-{folder.name}@example.com", "--settle", str(SETTLE), *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    delays = []
    try:
        time.sleep(3)  # started and listening
        for number in range(drops):
            path = folder / f"drop-{number}.pdf"
            path.write_bytes(SAMPLE + f"% {folder.name} {number}\n".encode())
            settled = time.time() + SETTLE
            while True:
                with db.session() as s:
                    handle = s.scalar(
                        select(Document.gearman_handle).where(Document.path == str(path))
                    )
                if handle:
                    delays.append(time.time() - settled)
                    break
                time.sleep(0.005)
            time.sleep(secrets.randbelow(500) / 1000)  # drops out of step with any timer
    finally:
        watch.terminate()
        watch.wait(timeout=60)
        db.engine.dispose()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--drops", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as tmp:
        base = Path(tmp)
        folder = base / "scans"
        folder.mkdir()
        gearmand = GearmandProcess(data_dir=base / "gearmand")
        gearmand.start()
        try:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")},
                "IMPORTER_DATA_DIR": str(base / "data"),
                "IMPORTER_DATABASE_URL": f"sqlite:///{base / 'data' / 'importer.db'}",
                "IMPORTER_GEARMAN_SERVERS": gearmand.address,
                "IMPORTER_SECRET_KEYS": "k1:" + secrets.token_hex(16),
                "IMPORTER_ALLOWED_ROOTS": str(base),
            }
            os.environ.update(env)
            settings = Settings()
            make_files(folder, args.files)
            first, files, _ = timed_pass(settings, folder, "first@example.com")
            db = open_database(settings.resolved_database_url)
            with db.session() as s:
                s.execute(update(Document).values(status=DocStatus.done))
            print(f"first pass, {files:,} new files submitted: {first:.2f} s")
            again, files, unchanged = timed_pass(settings, folder, "first@example.com")
            print(f"restarted watch, {files:,} files decided before ({unchanged:,}): {again:.2f} s")
            other, files, _ = timed_pass(settings, folder, "other@example.com")
            print(
                f"another watch, {files:,} files imported before (hashed, skipped): {other:.2f} s"
            )
            for label, extra in (("inotify", ()), ("--poll 1", ("--poll", "1"))):
                delays = settle_delays(
                    env, base / label.strip("-").replace(" ", ""), args.drops, *extra
                )
                print(
                    f"settled to queued, {label}, {len(delays)} files: median"
                    f" {statistics.median(delays):.3f} s, max {max(delays):.3f} s"
                )
        finally:
            gearmand.stop()


if __name__ == "__main__":
    main()

"""`importer watch`: files dropped into a folder are imported once, when complete, across
restarts, with inotify or by polling a folder inotify cannot see.

Each test runs the command as a user would, against a real gearmand, and the workers
with `importer worker --burst`; the database says what was recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from inotify_simple import INotify, flags
from sqlalchemy import select

from importer.db import Document, open_database
from importer.db.models import Batch, Outbox, WatchedFile
from importer.watch.sources import blind_to_inotify, fstype_of
from importer.watch.state import Settled, WatchState
from tests.conftest import SAMPLES, importer, settings_from

EMAIL = "scans@example.com"
BORN_DIGITAL = (SAMPLES / "born_digital.pdf").read_bytes()


def pdf(n: int) -> bytes:
    """A whole PDF of its own content (a comment after its end makes the sha256 differ)."""
    return BORN_DIGITAL + f"% copy {n}\n".encode()


def documents(env: dict[str, str]) -> list[Document]:
    with open_database(settings_from(env).resolved_database_url).session() as s:
        found = list(s.scalars(select(Document).order_by(Document.id)))
        s.expunge_all()
        return found


def wait_for(what: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


class Watch:
    """`importer watch` in the background, its stderr kept for the test to read."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        with log.open("ab") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "importer", "watch", *args, "--email", EMAIL],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=handle,
                stdin=subprocess.DEVNULL,
            )
        wait_for(lambda: self.listening() or self.gone())

    def listening(self) -> bool:
        """It said how it watches: inotify or polling."""
        return "importer watch: inotify" in self.text() or "polling every" in self.text()

    def text(self) -> str:
        return self.log.read_text()

    def gone(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.text()


@pytest.fixture
def watching(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Watch]]:
    started: list[Watch] = []

    def start(*args: str) -> Watch:
        watch = Watch(env, tmp_path / "watch.log", *args)
        assert not watch.gone(), watch.text()
        started.append(watch)
        return watch

    yield start
    for watch in started:
        if not watch.gone():
            watch.proc.kill()
            watch.proc.wait()


def test_a_file_written_slowly_is_imported_once_after_it_is_complete(
    env: dict[str, str], tmp_path: Path, watching: Callable[..., Watch]
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    watch = watching(str(folder), "--settle", "1")
    data = pdf(1)
    half = len(data) // 2
    with (folder / "slow.pdf").open("wb") as handle:
        for first in range(0, half, 500):  # pauses shorter than the settle time
            handle.write(data[first : min(first + 500, half)])
            handle.flush()
            time.sleep(0.3)
        time.sleep(3)  # a pause longer than it: the start of a PDF, without its end
        assert documents(env) == [], "a PDF without its end was read"
        handle.write(data[half:])
        for page in range(5):  # then an update appended, as some scanners add pages
            handle.flush()
            time.sleep(0.3)
            handle.write(f"% page {page}\n%%EOF\n".encode())
            data += f"% page {page}\n%%EOF\n".encode()
    wait_for(lambda: documents(env))
    time.sleep(2)  # time enough for a second submission, if there were one
    (doc,) = documents(env)
    assert doc.size == len(data) and doc.path == str(folder / "slow.pdf")
    importer("worker", "--burst", env=env, check=True, timeout=120)
    (doc,) = documents(env)
    assert doc.status.value == "done", doc.error
    watch.stop()


def test_a_file_renamed_into_the_folder_is_imported(
    env: dict[str, str], tmp_path: Path, watching: Callable[..., Watch]
) -> None:
    folder, staging = tmp_path / "scans", tmp_path / "staging"
    folder.mkdir()
    staging.mkdir()
    (folder / "sub").mkdir()
    watch = watching(str(folder), "--settle", "0.5")
    (staging / "moved.pdf").write_bytes(pdf(2))
    os.rename(staging / "moved.pdf", folder / "sub" / "moved.pdf")
    wait_for(lambda: documents(env), timeout=30)
    (folder / "new").mkdir()  # a folder made after the start is watched too
    (staging / "deeper.pdf").write_bytes(pdf(3))
    time.sleep(1)  # the watch has seen the new folder and waits for the next event
    os.rename(staging / "deeper.pdf", folder / "new" / "deeper.pdf")
    wait_for(lambda: len(documents(env)) == 2, timeout=30)
    assert {Path(d.path).name for d in documents(env)} == {"moved.pdf", "deeper.pdf"}
    assert "inotify" in watch.text()
    watch.stop()


def test_a_restart_in_between_loses_and_repeats_nothing(
    env: dict[str, str], tmp_path: Path, watching: Callable[..., Watch]
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(pdf(4))
    watch = watching(str(folder), "--settle", "0.5")
    wait_for(lambda: documents(env))
    watch.stop()
    (folder / "b.pdf").write_bytes(pdf(5))  # arrives while no watch runs
    watch = watching(str(folder), "--settle", "0.5")
    wait_for(lambda: len(documents(env)) == 2)
    time.sleep(2)
    watch.stop()
    docs = documents(env)
    assert sorted(Path(d.path).name for d in docs) == ["a.pdf", "b.pdf"]
    assert len({d.batch_id for d in docs}) == 1, "the open batch was not taken up again"


def test_a_watch_stopped_while_submitting_finishes_what_it_started(
    env: dict[str, str], tmp_path: Path, watching: Callable[..., Watch]
) -> None:
    """Stopped between recording files pending and giving them their outcome: the file
    whose document is in the batch is not sent again, even once that batch has closed
    (it is due at once, and closes before the files settle again); the one without is."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for name, n in (("sent.pdf", 6), ("unsent.pdf", 7)):
        (folder / name).write_bytes(pdf(n))
    importer("watch", str(folder), "--email", EMAIL, "--once", "--settle", "0", env=env, check=True)
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        unsent = s.scalars(select(Document).where(Document.path.endswith("unsent.pdf"))).one()
        s.delete(unsent)  # as if the stop came before its group was recorded
        batch = unsent.batch_id
    WatchState(db, [folder], EMAIL).mark_pending(
        batch,
        [
            Settled(str(folder / name), info.st_size, info.st_mtime_ns, looks_pdf=True)
            for name in ("sent.pdf", "unsent.pdf")
            for info in [(folder / name).stat()]
        ],
    )
    watch = watching(str(folder), "--settle", "2", "--batch-every", "0")
    wait_for(lambda: len(documents(env)) == 2)
    time.sleep(4)  # time enough for a second submission, if there were one
    watch.stop()
    assert sorted(Path(d.path).name for d in documents(env)) == ["sent.pdf", "unsent.pdf"]
    with db.session() as s:
        outcomes = {Path(f.path).name: f.outcome for f in s.scalars(select(WatchedFile))}
    assert outcomes == {"sent.pdf": "submitted", "unsent.pdf": "submitted"}


@pytest.fixture
def blind_folder(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(watched, written): an overlay whose lower folder is written directly, as a share
    is by another host. Files show in the overlay; inotify on it hears nothing."""
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount an overlay here: {mounted.stderr.strip()}")
    try:
        yield merged, lower
    finally:
        subprocess.run(["umount", "-l", str(merged)], check=True)


def test_poll_imports_from_a_folder_inotify_cannot_see(
    env: dict[str, str], blind_folder: tuple[Path, Path], watching: Callable[..., Watch]
) -> None:
    watched, written = blind_folder
    with INotify() as probe:
        probe.add_watch(watched, flags.CREATE | flags.CLOSE_WRITE | flags.MOVED_TO)
        (written / "probe.txt").write_text("x")
        assert probe.read(timeout=500) == [], "the stand-in is not blind to inotify"
        assert (watched / "probe.txt").exists(), "the stand-in does not show the files"
    (written / "probe.txt").unlink()
    watch = watching(str(watched), "--settle", "0.5", "--poll", "0.5")
    (written / "remote.pdf").write_bytes(pdf(8))
    wait_for(lambda: documents(env), timeout=30)
    (doc,) = documents(env)
    assert doc.path == str(watched / "remote.pdf")
    assert "polling every 0.5 s" in watch.text()
    watch.stop()


def test_a_network_file_system_is_polled(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:35 / /srv/scan\\040share rw,relatime shared:9 - nfs4 nas:/scans rw,vers=4.2\n"
        "41 40 0:36 / /srv/scan\\040share/local rw - tmpfs tmpfs rw\n"
    )
    assert fstype_of(Path("/srv/scan share/in"), mountinfo) == "nfs4"
    assert fstype_of(Path("/srv/scan share/local/x"), mountinfo) == "tmpfs"
    assert fstype_of(Path("/srv/scanner"), mountinfo) == "ext4"
    assert blind_to_inotify("nfs4") and blind_to_inotify("fuse.sshfs")
    assert not blind_to_inotify("ext4") and not blind_to_inotify("tmpfs")


def test_once_filters_bad_files_and_rolling_batches(
    env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    env = {**env, "IMPORTER_DATABASE_URL": database_url}
    folder = tmp_path / "scans"
    folder.mkdir()
    for n in range(4):
        (folder / f"scan-{n}.pdf").write_bytes(pdf(10 + n))
    (folder / "skip-me.pdf").write_bytes(pdf(20))
    (folder / "notes.pdf").write_text("minutes of the meeting, not a PDF")
    (folder / "readme.txt").write_text("not a PDF")
    args = ("watch", str(folder), "--email", EMAIL, "--once", "--settle", "0.3")
    run = importer(*args, "--exclude", "skip-*", "--batch-files", "2", env=env, check=True)
    assert "notes.pdf" in run.stderr and "not a PDF" in run.stderr
    docs = documents(env)
    assert sorted(Path(d.path).name for d in docs) == [
        "notes.pdf", "scan-0.pdf", "scan-1.pdf", "scan-2.pdf", "scan-3.pdf"
    ]  # fmt: skip
    (bad,) = [d for d in docs if d.path.endswith("notes.pdf")]
    assert bad.status.value == "failed" and bad.error_kind == "not-pdf"
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        files = {Path(f.path).name: (f.outcome, f.reason) for f in s.scalars(select(WatchedFile))}
        batches = s.scalars(select(Batch).order_by(Batch.created_at)).all()
        assert [b.total for b in batches] == [2, 2, 0]  # two closed, the third open
    assert files["notes.pdf"][0] == "failed" and "not a PDF" in (files["notes.pdf"][1] or "")
    assert files["readme.txt"][0] == "ignored" and "skip-me.pdf" not in files
    # a second run: nothing new; a copy of a file already imported is skipped by its hash
    importer("worker", "--burst", env=env, check=True, timeout=120)
    (folder / "copy.pdf").write_bytes(pdf(10))
    again = importer(*args, "--exclude", "skip-*", "--batch-every", "0", env=env, check=True)
    assert "copy.pdf: skipped" in again.stderr, again.stderr
    assert len(documents(env)) == 5
    with db.session() as s:
        closed = s.scalars(select(Batch).where(Batch.finished_at.is_not(None))).all()
        mails = s.scalars(select(Outbox)).all()
    assert len(closed) == 3 and sorted(m.batch_id for m in mails) == sorted(b.id for b in closed), (
        "each closed batch gets its one e-mail"
    )

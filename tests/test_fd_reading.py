"""Reading through an open descriptor: every tool reads the file that was opened, never
the name, so a file swapped for a link after it was checked is not read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from inotify_simple import INotify, flags

from importer.states import PageSource
from tests.conftest import SAMPLES, cer
from workers.document import PageResult
from workers.reader import iter_pages


def test_every_tool_reads_the_opened_file_not_the_name(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.pdf"  # text layer, scan, text layer: every tool runs
    shutil.copy(SAMPLES / "mixed.pdf", mixed)
    canary = tmp_path / "outside" / "secret.pdf"
    canary.parent.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", canary)
    fd = os.open(mixed, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        mixed.unlink()
        mixed.symlink_to(canary)  # swapped after it was opened and checked
        inotify = INotify()
        inotify.add_watch(str(canary), flags.OPEN)
        pages = [p for p in iter_pages(mixed, fd=fd) if isinstance(p, PageResult)]
        assert not inotify.read(timeout=0), "the name was opened again"
    finally:
        os.close(fd)
    expected = (SAMPLES / "mixed.txt").read_text().split("\f")
    assert [p.source for p in pages] == [
        PageSource.text_layer,
        PageSource.ocr,
        PageSource.text_layer,
    ]
    for page in pages:
        assert cer(expected[page.number - 1], page.text) < 0.03, page.number


def test_a_file_swapped_mid_document_is_not_read(env: dict[str, str], tmp_path: Path) -> None:
    """The worker opens the recorded file once; swapped for a link to an outside file after
    page 1 was read, the later pages still come from the file that was opened."""
    import json
    import subprocess
    import sys
    import time

    from sqlalchemy import func, select

    from importer.db import Page, open_database
    from tests.conftest import importer, settings_from
    from tests.test_text_layer import md

    root = tmp_path / "root"
    root.mkdir()
    scan = md.scan_document(pages=4, rotations=(0,), seed=3)
    scan.write(root / "scan.pdf")
    canary = tmp_path / "outside" / "secret.pdf"
    canary.parent.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", canary)
    env["IMPORTER_ALLOWED_ROOTS"] = str(root)
    env["IMPORTER_LEASE_SECONDS"] = "3"
    submitted = importer(
        "submit", str(root / "scan.pdf"), "--email", "ops@example.com", "--json",
        env=env, check=True,
    )  # fmt: skip
    batch = json.loads(submitted.stdout)["batch_id"]
    inotify = INotify()
    inotify.add_watch(str(canary), flags.OPEN)
    db = open_database(settings_from(env).resolved_database_url)
    worker = subprocess.Popen([sys.executable, "-m", "importer", "worker", "--burst"], env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            with db.session() as s:
                if s.scalar(select(func.count()).select_from(Page)):
                    break
            assert worker.poll() is None and time.monotonic() < deadline, "no page stored"
            time.sleep(0.05)
        (root / "scan.pdf").unlink()
        (root / "scan.pdf").symlink_to(canary)
        assert worker.wait(120) == 0
    finally:
        worker.kill()
    assert not inotify.read(timeout=0), "the outside file was opened"
    doc = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    assert doc["documents"][0]["status"] == "done"
    with db.session() as s:
        texts = {number: text for number, text in s.execute(select(Page.number, Page.text))}
    assert sorted(texts) == [1, 2, 3, 4]
    for number, text in texts.items():
        assert cer(scan.pages[number - 1], text) < 0.05, number


def test_a_directory_swapped_for_a_link_is_not_followed(tmp_path: Path) -> None:
    import pytest

    from importer.opening import Refused, open_confined

    root = tmp_path / "root"
    (root / "inbox").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", outside / "a.pdf")
    recorded = root / "inbox" / "a.pdf"  # what the submitter recorded, resolved
    shutil.copy(SAMPLES / "born_digital.pdf", recorded)
    size = recorded.stat().st_size
    os.close(open_confined(str(recorded), [root], size))  # as recorded: opened
    shutil.rmtree(root / "inbox")
    (root / "inbox").symlink_to(outside)  # a directory on the way swapped for a link
    inotify = INotify()
    inotify.add_watch(str(outside / "a.pdf"), flags.OPEN)
    with pytest.raises(Refused, match="symbolic link"):
        open_confined(str(recorded), [root], size)
    assert not inotify.read(timeout=0), "the outside file was opened"


def test_only_the_regular_file_recorded_at_submit_is_opened(tmp_path: Path) -> None:
    import pytest

    from importer.opening import Refused, open_confined

    recorded = tmp_path / "a.pdf"
    shutil.copy(SAMPLES / "born_digital.pdf", recorded)
    size = recorded.stat().st_size
    with pytest.raises(Refused, match="changed since it was submitted"):
        open_confined(str(recorded), [tmp_path], size - 1)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.pdf"
    os.link(recorded, outside)  # the same file under a second name, outside the roots
    try:
        with pytest.raises(Refused, match="2 hard links"):
            open_confined(str(recorded), [tmp_path], size)
    finally:
        outside.unlink()
    recorded.unlink()
    os.mkfifo(recorded)  # would block a plain open() until someone writes
    with pytest.raises(Refused, match="not a regular file"):
        open_confined(str(recorded), [tmp_path], size)
    with pytest.raises(Refused, match="outside IMPORTER_ALLOWED_ROOTS"):
        open_confined(str(recorded), [tmp_path / "elsewhere"], size)


def test_without_openat2_a_directory_swapped_for_a_link_is_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel before 5.6 has no openat2: the open then checks only the last component,
    and where the open file really is must catch a link on the way."""
    import ctypes
    import errno

    import pytest

    from importer import opening

    class NoOpenat2:  # the kernel's answer to an unknown system call
        def syscall(self, *_args: object) -> int:
            ctypes.set_errno(errno.ENOSYS)
            return -1

    monkeypatch.setattr(opening, "_LIBC", NoOpenat2())
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "born_digital.pdf", outside / "a.pdf")
    (root / "inbox").symlink_to(outside)  # a component on the way, not the last one
    recorded = root / "inbox" / "a.pdf"
    with pytest.raises(opening.Refused, match="resolves elsewhere"):
        opening.open_confined(str(recorded), [root], None)
    with pytest.raises(opening.Refused, match="resolves elsewhere"):
        opening.open_directory(str(root / "inbox" / "sub"))

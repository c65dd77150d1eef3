"""Reading through an open descriptor: every tool reads the file that was opened, never
the name, so a file swapped for a link after it was checked is not read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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

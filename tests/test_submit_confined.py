"""The submitter reads only what the worker would: each file opened once, confined.

The attacks are made as they were reported: another local user who can write into the
import directory (`setpriv` as nobody) watches the submitter with inotify and swaps a
directory for a link to a root-only one, or a file for a FIFO, once it has been listed; a
sparse file claims terabytes. A large first file gives the attacker time to win the race.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from inotify_simple import INotify, flags
from sqlalchemy import func, select

from importer.db import Document, Page, open_database
from tests.conftest import SAMPLES, importer, settings_from

NOBODY = "65534"
SWAPPER = Path(__file__).with_name("swapper.py")
EMAIL = "ops@example.com"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory another user can reach (pytest's own are root's only)."""
    base = Path(tempfile.mkdtemp(prefix="importer-shared-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _inbox(base: Path) -> Path:
    """An import directory the attacker (nobody) may write, holding a large first file."""
    inbox = base / "in"
    inbox.mkdir(mode=0o755)
    os.chown(inbox, int(NOBODY), int(NOBODY))
    data = (SAMPLES / "born_digital.pdf").read_bytes()
    (inbox / "a-large.pdf").write_bytes(data + os.urandom(48 * 2**20))  # ~50 ms to hash
    return inbox


def _attacker(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, str(SWAPPER), *args],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _documents(env: dict[str, str]) -> dict[str, tuple[str, str | None, str]]:
    """File name -> (status, error kind, sha256) of every recorded document."""
    with open_database(settings_from(env).resolved_database_url).session() as s:
        return {
            Path(d.path).name: (d.status.value, d.error_kind, d.sha256)
            for d in s.scalars(select(Document))
        }


def test_a_directory_swapped_for_a_link_while_submitting_inline_is_refused(
    env: dict[str, str], shared: Path
) -> None:
    inbox = _inbox(shared)
    (inbox / "sub").mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", inbox / "sub" / "b.pdf")  # the harmless one
    os.chown(inbox / "sub", int(NOBODY), int(NOBODY))
    secret = shared / "root-only"
    secret.mkdir(mode=0o700)
    shutil.copy(SAMPLES / "mixed.pdf", secret / "b.pdf")
    secret_sha = hashlib.sha256((secret / "b.pdf").read_bytes()).hexdigest()
    env["IMPORTER_ALLOWED_ROOTS"] = str(inbox)
    watch = INotify()
    watch.add_watch(str(secret / "b.pdf"), flags.OPEN)
    attacker = _attacker("link", str(inbox / "sub"), str(secret))
    try:
        sub = importer("submit", str(inbox), "--email", EMAIL, "--inline", "--json", env=env,
                       timeout=120)  # fmt: skip
        assert attacker.stdout is not None and attacker.stdout.readline() == "swapped\n"
        assert attacker.wait(10) == 0
    finally:
        attacker.kill()
    assert sub.returncode == 0, sub.stderr
    assert (inbox / "sub").is_symlink(), "the attacker did not get to swap"
    assert not watch.read(timeout=0), "the root-only file was opened"
    importer("worker", "--burst", env=env, check=True, timeout=120)
    docs = _documents(env)
    assert docs["b.pdf"][:2] == ("failed", "link"), docs
    assert docs["a-large.pdf"][0] == "done"
    assert secret_sha not in {sha for _, _, sha in docs.values()}
    with open_database(settings_from(env).resolved_database_url).session() as s:
        stored = set(s.scalars(select(Document.path).join(Page, Page.document_id == Document.id)))
    assert stored == {str(inbox / "a-large.pdf")}, "text stored for another file"
    assert "symbolic link" in sub.stderr


def test_a_fifo_swapped_in_after_the_listing_is_refused_at_once(
    env: dict[str, str], shared: Path
) -> None:
    inbox = _inbox(shared)
    shutil.copy(SAMPLES / "born_digital.pdf", inbox / "b.pdf")
    env["IMPORTER_ALLOWED_ROOTS"] = str(inbox)
    attacker = _attacker("fifo", str(inbox), "b.pdf")
    try:
        sub = importer("submit", str(inbox), "--email", EMAIL, "--json", env=env, timeout=60)
        assert attacker.stdout is not None and attacker.stdout.readline() == "swapped\n"
    finally:
        attacker.kill()
    assert sub.returncode == 0, sub.stderr
    assert (inbox / "b.pdf").is_fifo()
    docs = _documents(env)
    assert docs["b.pdf"][:2] == ("failed", "not-a-file"), docs
    assert docs["a-large.pdf"][0] == "queued"
    assert "not a regular file" in sub.stderr


def test_a_sparse_file_over_the_size_cap_is_refused_unhashed(
    env: dict[str, str], tmp_path: Path
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", inbox / "a.pdf")
    huge = inbox / "huge.pdf"
    shutil.copy(SAMPLES / "born_digital.pdf", huge)
    subprocess.run(["truncate", "-s", "4T", str(huge)], check=True)  # hashing: an hour
    env["IMPORTER_ALLOWED_ROOTS"] = str(inbox)
    started = time.monotonic()
    sub = importer("submit", str(inbox), "--email", EMAIL, env=env, timeout=60)
    assert sub.returncode == 0, sub.stderr
    assert time.monotonic() - started < 60
    assert "1 refused unread" in sub.stdout
    docs = _documents(env)
    assert docs["huge.pdf"][:2] == ("failed", "over-limit"), docs
    assert docs["a.pdf"][0] == "queued"
    with open_database(settings_from(env).resolved_database_url).session() as s:
        error = s.scalar(select(Document.error).where(Document.path == str(huge)))
        assert s.scalar(select(func.count()).select_from(Document)) == 2
    assert "IMPORTER_MAX_FILE_MB=512" in (error or "")

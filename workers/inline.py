"""An inline job's bytes on the worker's host: a private file, read through its descriptor.

The bytes come already decrypted and authenticated (AES-GCM, bound to the signed header)
(`importer.payload.decode_job`). They are written to an unnamed file (O_TMPFILE, mode
0600) in this worker process's own 0700 directory, `<data dir>/inline/<host>-<pid>`: a
file without a name cannot be opened, swapped or linked by anyone, and the kernel frees it
when its last descriptor closes, whatever happens to the worker, kill -9 included. The
engine gets a read-only descriptor of it (reopened through /proc/self/fd), never the
writable one.

Where the filesystem cannot make unnamed files (NFS, some overlays), the file gets a
random name (O_CREAT | O_EXCL | O_NOFOLLOW, 0600), is opened again the way every document
is (`importer.opening.open_confined`: no link, a regular file with one name, the signed
size) and its name is removed before the engine reads a byte. A worker killed between
the two leaves the file in its own directory, and the next worker process on the host
removes the directories of processes that are gone when it starts (`InlineSpool`).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
from pathlib import Path

from importer.config import check_ours, make_private_dir
from importer.opening import open_confined

_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
WRITE_BYTES = 1 << 20


class InlineSpool:
    """This worker process's directory for inline files; stale ones of this host go at start."""

    def __init__(self, data_dir: Path) -> None:
        base = data_dir.resolve() / "inline"
        make_private_dir(base)
        check_ours(base)
        self.host = socket.gethostname()
        _remove_gone(base, self.host)
        self.dir = base / f"{self.host}-{os.getpid()}"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        check_ours(self.dir)

    def spool(self, content: memoryview) -> int:
        """A read-only descriptor of a nameless private file holding `content`."""
        try:
            fd = os.open(self.dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno not in _NO_TMPFILE:
                raise
            return self._spool_named(content)
        try:
            _write_all(fd, content)
            return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(fd)

    def _spool_named(self, content: memoryview) -> int:
        path = self.dir / f"{secrets.token_hex(8)}.pdf"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
            try:
                _write_all(fd, content)
            finally:
                os.close(fd)
            return open_confined(str(path), [self.dir], len(content))
        finally:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _write_all(fd: int, content: memoryview) -> None:
    done = 0
    while done < len(content):
        done += os.write(fd, content[done : done + WRITE_BYTES])


def _remove_gone(base: Path, host: str) -> None:
    """Remove the directories of this host's worker processes that no longer run."""
    for entry in base.glob(f"{host}-*"):
        pid = entry.name.rpartition("-")[2]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

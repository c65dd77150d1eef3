"""Opening a document: once, without following links, and only where it may be.

The submitter and the worker open every file through `open_confined`, so both refuse the
same things: a symbolic link in any component of the path, something other than a regular
file (a FIFO or a device is refused without blocking), a file with a second hard link,
one that is not really under the roots. The descriptor it returns is the only way the file
is read from then on: the submitter sniffs, measures and hashes it, the worker hashes it
again (`sha256_of`) and its engine child reads it as `fd://N`, so a file swapped for a
link (or another file) after the check is never read, and a file whose bytes changed in
place is caught before any tool parses it. `open_directory` lists a directory the same
way, so a directory swapped for a link while it waits to be listed is not entered.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from importer.reasons import ErrorKind

_SYS_OPENAT2 = 437  # the same number on every Linux architecture
_AT_FDCWD = -100
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIRECTORY_FLAGS = _FLAGS | os.O_DIRECTORY
HASH_BYTES = 1 << 20


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class Refused(Exception):
    """The file may not be read, whatever happens next: `reason` says why, for a person,
    `kind` for grouping (`importer.reasons`)."""

    def __init__(self, reason: str, kind: ErrorKind) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def open_confined(path: str, roots: Sequence[Path], size: int | None) -> int:
    """An open, read-only descriptor of the recorded file, checked where it really is.

    Raises Refused for a link (symbolic, or a second hard link), something other than a
    regular file, a file outside the roots or one whose size is not the size recorded at
    submit; OSError when it cannot be opened now (gone, storage trouble), which a later
    attempt may get past.
    """
    if roots and not _within(Path(path), roots):  # nothing outside the roots is even opened
        raise Refused(
            f"path {path} is outside IMPORTER_ALLOWED_ROOTS; refused", ErrorKind.outside_roots
        )
    fd = _open_where_named(path, _FLAGS, "path")  # really there: under the roots checked
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"path {path} is not a regular file; refused", ErrorKind.not_a_file)
        if info.st_nlink != 1:  # another name, maybe outside the roots, for the same file
            raise Refused(
                f"path {path} has {info.st_nlink} hard links (one may lie outside the roots);"
                " refused: import a copy of it",
                ErrorKind.link,
            )
        if size is not None and info.st_size != size:
            raise Refused(
                f"{path} changed since it was submitted ({info.st_size:,} bytes, {size:,}"
                " recorded); refused: submit it again with --force",
                ErrorKind.changed,
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def open_directory(path: str) -> int:
    """A descriptor of the directory `path` for listing (`os.scandir(fd)`), opened without
    following a symbolic link in any component and checked to be where it is named.

    Raises Refused for a link on the way (a directory renamed and replaced by a link to
    another one while it waited to be listed); OSError when it cannot be opened."""
    return _open_where_named(path, _DIRECTORY_FLAGS, "directory")


def _open_where_named(path: str, flags: int, what: str) -> int:
    """A descriptor opened without links (`_open_no_links`) and really at `path`: the one
    check the submitter's listing and every file open share."""
    try:
        fd = _open_no_links(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Refused(
                f"{what} {path} goes through a symbolic link; refused", ErrorKind.link
            ) from e
        raise
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")  # where the open file really is
    except BaseException:
        os.close(fd)
        raise
    if real != path:
        os.close(fd)
        raise Refused(f"{what} {path} resolves elsewhere ({real}); refused", ErrorKind.link)
    return fd


def sha256_of(fd: int) -> tuple[str, int]:
    """(hex sha256, bytes read) of the open file, read from its start with pread: the
    descriptor's offset is left where it was, for whoever reads it next."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BYTES)
    view = memoryview(buffer)
    offset = 0
    while count := os.preadv(fd, [buffer], offset):
        digest.update(view[:count])
        offset += count
    return digest.hexdigest(), offset


def _open_no_links(path: str, flags: int = _FLAGS) -> int:
    """Open without following a symbolic link in any component (openat2 with
    RESOLVE_NO_SYMLINKS, Linux 5.6); where the kernel lacks openat2, at least not in the
    last one (O_NOFOLLOW), the real location being checked afterwards either way.

    O_NONBLOCK: a FIFO put in the file's place must not hang the reader on open."""
    how = _OpenHow(flags, 0, _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    fd = _LIBC.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd >= 0:
        return int(fd)
    code = ctypes.get_errno()
    if code not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter refusing it
        raise OSError(code, os.strerror(code), path)
    return os.open(path, flags)

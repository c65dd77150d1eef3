"""A document's searchable copy while it is written: a temporary file beside its name.

The worker makes the file and hands its descriptor to the document child, which writes
the PDF into it and never sees the archive directory. Only when the document is done is
the file synced and renamed to the name submit gave it, and the directory synced, so the
name holds either nothing or a whole PDF: a document that fails, a worker that dies, a
child killed mid-write leave at most a hidden `.part` file, never a partial archive. A
retry or a replay writes the same name again, replacing the same document's copy; no two
documents are given one name (`importer.archive_names`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from types import TracebackType

MODE = 0o640


class ArchiveFile:
    def __init__(self, final: str, fd: int, temporary: str) -> None:
        self.final = final
        self.fd = fd
        self.temporary = temporary
        self._open = True

    @classmethod
    def create(cls, final: str) -> ArchiveFile:
        """A new temporary file in `final`'s directory (made if need be); OSError if it
        cannot be written there."""
        directory, name = os.path.split(final)
        os.makedirs(directory, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
        try:
            os.fchmod(fd, MODE)
        except OSError:
            os.close(fd)
            os.unlink(temporary)
            raise
        return cls(final, fd, temporary)

    def commit(self) -> None:
        """Sync the written file and give it its name; OSError if that fails (the file
        is then discarded on exit)."""
        os.fsync(self.fd)
        os.close(self.fd)
        self._open = False
        os.replace(self.temporary, self.final)
        self.temporary = ""
        directory = os.open(os.path.dirname(self.final), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def discard(self) -> None:
        if self._open:
            os.close(self.fd)
            self._open = False
        if self.temporary:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temporary)
            self.temporary = ""

    def __enter__(self) -> ArchiveFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.discard()


def cannot_write(final: str, error: OSError) -> str:
    """The reason a document waits for its archive directory, naming it and the fix."""
    return (
        f"cannot write the searchable PDF {final}: {error.strerror or error}; make"
        f" {os.path.dirname(final)} writable by the workers (the batch's --archive DIR)"
    )

"""When a file dropped into a watched folder may be read: it has stopped changing and it
looks like a whole PDF.

A scanner or a copy over the network writes a file in pieces. A file is taken once its
size and modification time have stayed the same for the settle time, as seen by this
process (so a server whose clock differs does not matter), and, if it starts like a PDF,
once its end-of-file marker is there. One that starts like a PDF and has no marker is held
as still being written, until it has not changed for `INCOMPLETE_ROUNDS` settle times;
then it is submitted anyway, for the worker to record what is wrong with it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from importer.opening import Refused, open_confined
from importer.submit import PDF_MAGIC, SNIFF_BYTES

PDF_END = b"%%EOF"
TAIL_BYTES = 1024  # the marker is in the last bytes; some writers pad after it
INCOMPLETE_ROUNDS = 10


class Readiness(enum.Enum):
    pdf = "pdf"  # a whole PDF, as far as its first and last bytes tell
    other = "other"  # not a PDF by its first bytes, or refused: submit records or ignores it
    incomplete = "incomplete"  # a PDF's start without its end: still being written?
    changed = "changed"  # changed since it was last seen
    gone = "gone"  # cannot be opened now (removed, renamed away)


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float  # when it was first seen like this (monotonic seconds)


class Settler:
    """What each file not yet decided on looked like, and since when."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self._seen: dict[str, _Seen] = {}

    def observe(self, path: str, size: int, mtime_ns: int, now: float) -> float:
        """Seconds the file must stay as it is now before it may be read (0: it may)."""
        seen = self._seen.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (size, mtime_ns):
            self._seen[path] = _Seen(size, mtime_ns, now)
            return self.settle if self.settle > 0 else 0.0
        return max(seen.since + self.settle - now, 0.0)

    def unchanged_for(self, path: str, now: float) -> float:
        seen = self._seen.get(path)
        return 0.0 if seen is None else now - seen.since

    def forget(self, path: str) -> None:
        self._seen.pop(path, None)

    def keep_only(self, present: set[str]) -> None:
        """Drop files no longer there, so memory follows the folder, not its history."""
        for path in [p for p in self._seen if p not in present]:
            del self._seen[path]

    def __len__(self) -> int:
        return len(self._seen)


def readiness(path: str, confine: Sequence[Path], size: int, mtime_ns: int) -> Readiness:
    """Open the file confined, as submit will, and look at its first and last bytes."""
    try:
        fd = open_confined(path, confine, None)
    except Refused:
        return Readiness.other  # submit opens it the same way and records why it is refused
    except OSError:
        return Readiness.gone
    try:
        info = os.fstat(fd)
        if (info.st_size, info.st_mtime_ns) != (size, mtime_ns):
            return Readiness.changed
        if PDF_MAGIC not in os.pread(fd, SNIFF_BYTES, 0):
            return Readiness.other
        tail = os.pread(fd, TAIL_BYTES, max(size - TAIL_BYTES, 0))
        return Readiness.pdf if PDF_END in tail else Readiness.incomplete
    except OSError:
        return Readiness.gone
    finally:
        os.close(fd)

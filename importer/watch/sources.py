"""When to look at the watched folders again: inotify, or a timer where inotify is blind.

inotify only hears changes made through this machine's kernel: on NFS, SMB/CIFS, sshfs
and other network or FUSE file systems, a file written by another host makes no event.
Such a folder is polled instead, found from the file system type of its mount
(/proc/self/mountinfo). Either way the pass that follows walks the folders: an event only
says when, never what, so a lost event (a full inotify queue) costs time, not a file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from inotify_simple import Event, INotify, flags

log = logging.getLogger(__name__)

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "davfs",
        "virtiofs",
    }
)
RESCAN_SECONDS = 600.0  # with inotify: a full pass at least this often all the same
QUIET_MS = 20  # events this close together make one pass
_EVENTS = (
    flags.CLOSE_WRITE
    | flags.MOVED_TO
    | flags.CREATE
    | flags.MODIFY
    | flags.ATTRIB
    | flags.DELETE_SELF
    | flags.MOVE_SELF
)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def fstype_of(path: Path, mountinfo: Path = MOUNTINFO) -> str:
    """The file system type of the mount that holds `path` (a resolved path)."""
    best, fstype = "", "unknown"
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = _unescape(fields[4])
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the last of equal ones is on top
            best = point
            fstype = line.split(" - ", 1)[1].split()[0]
    return fstype


def blind_to_inotify(fstype: str) -> bool:
    return fstype in NETWORK_FS or fstype == "fuse" or fstype.startswith("fuse.")


class PollSource:
    """Wakes the watch every `every` seconds."""

    def __init__(self, every: float, stop: threading.Event) -> None:
        self.every = every
        self._stop = stop

    def wait(self, timeout: float) -> None:
        self._stop.wait(min(timeout, self.every))


class InotifySource:
    """Wakes the watch when something changes in the folders (and their subfolders, new
    ones included), or when `timeout` runs out."""

    def __init__(self, dirs: Sequence[Path], recursive: bool, stop: threading.Event) -> None:
        self._inotify = INotify()
        self._recursive = recursive
        self._stop = stop
        self._dirs: dict[int, str] = {}
        for top in dirs:
            self._add_tree(str(top))

    def _add(self, directory: str) -> None:
        try:
            wd = self._inotify.add_watch(directory, _EVENTS | flags.DONT_FOLLOW | flags.ONLYDIR)
        except OSError as e:  # gone already, or fs.inotify.max_user_watches reached
            log.warning("%s: no inotify watch (%s); seen on the next full pass", directory, e)
            return
        self._dirs[wd] = directory

    def _add_tree(self, top: str) -> None:
        self._add(top)
        if not self._recursive:
            return
        for current, subdirs, _ in os.walk(top):  # links to directories are not followed
            for name in subdirs:
                self._add(os.path.join(current, name))

    def wait(self, timeout: float) -> None:
        """Return once something changed (after a short quiet spell, so a burst of writes
        makes one pass), once `timeout` ran out, or once the watch is stopped."""
        left = min(timeout, RESCAN_SECONDS)
        while left > 0 and not self._stop.is_set():
            step = min(left, 1.0)
            events = self._inotify.read(timeout=int(step * 1000))
            left -= step
            if events:
                self._take(events)
                self._take(self._inotify.read(timeout=QUIET_MS))
                return

    def _take(self, events: list[Event]) -> None:
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                log.warning("inotify queue overflowed: a full pass will find what was missed")
            created = event.mask & (flags.CREATE | flags.MOVED_TO)
            if created and event.mask & flags.ISDIR and self._recursive:
                parent = self._dirs.get(event.wd)
                if parent is not None:
                    self._add_tree(os.path.join(parent, event.name))

    def close(self) -> None:
        self._inotify.close()

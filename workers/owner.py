"""Who holds a document's lease: one worker process, named so that a process on the same
host can tell for certain that it is dead.

A lease names its owner as `host:pid:namespace:started`, the PID namespace's inode and
the process's start time (clock ticks since boot) beside its pid, so neither a reused pid
nor a process of another container on the same host is taken for it:

    >>> Owner.decode("ocr-3:4242:4026531836:987654").pid
    4242

A worker that gearmand hands a job whose lease is held by a dead process of its own host
takes the document over at once, instead of waiting for the lease to run out; the
supervisor that saw the process die hands its documents back (`lifecycle.release_owner`).
Owners on other hosts are judged by their lease alone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

_STARTED_FIELD = 19  # field 22 of /proc/PID/stat (starttime), counted from field 3
_STATE_FIELD = 0
_GONE = ("Z", "X")  # a zombie has died, only its exit status is left


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    namespace: int  # inode of the PID namespace the pid is counted in
    started: int

    def encode(self) -> str:
        return f"{self.host}:{self.pid}:{self.namespace}:{self.started}"

    @classmethod
    def decode(cls, text: str) -> Owner | None:
        """The owner a lease names, or None for text in no owner's format (an older row)."""
        host, sep, rest = text.partition(":")
        parts = rest.split(":")
        if not sep or len(parts) != 3 or not all(p.isdigit() for p in parts):
            return None
        pid, namespace, started = map(int, parts)
        return cls(host, pid, namespace, started)

    @classmethod
    def of(cls, pid: int) -> Owner:
        """Process `pid` of this host, while it runs (or lies unreaped); OSError if gone."""
        fields = _stat(pid)
        if fields is None:
            raise ProcessLookupError(pid, f"no process {pid}")
        return cls(socket.gethostname(), pid, _namespace(), int(fields[_STARTED_FIELD]))

    @classmethod
    def current(cls) -> Owner:
        return cls.of(os.getpid())

    def is_dead_here(self) -> bool:
        """True only when this owner certainly lived on this host, in this PID namespace,
        and has died since (a zombie counts as dead); False when it may be alive or lived
        elsewhere."""
        if self.host != socket.gethostname() or self.namespace != _namespace():
            return False
        fields = _stat(self.pid)
        if fields is None:
            return True
        return fields[_STATE_FIELD] in _GONE or int(fields[_STARTED_FIELD]) != self.started


def dead_here(lease_owner: str) -> bool:
    """Whether the process a lease names has certainly died on this host."""
    owner = Owner.decode(lease_owner)
    return owner is not None and owner.is_dead_here()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    return text.rsplit(")", 1)[1].split()


def _namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino

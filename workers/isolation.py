"""What the process that parses a PDF can reach: no network, no secrets, no privileges.

The engine's fork server enters a network namespace of its own before it serves (so
every document child has no network at all), and, when the worker runs as root, each
document child drops to an unprivileged user after the fork and before it reads
anything. The worker processes themselves are made non-dumpable, so a child running as
the same user cannot read their memory or `/proc/<pid>/environ` (keys, database URL).

`IMPORTER_CHILD_USER` names the user, or a prefix: when users PREFIX0, PREFIX1, ... exist,
worker slot N's children run as PREFIXN, so children of different workers cannot trace
each other's programs either.
"""

from __future__ import annotations

import ctypes
import os
import pwd
from dataclasses import dataclass

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
_PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class ChildUser:
    name: str
    uid: int
    gid: int

    def argument(self) -> str:
        return f"{self.name}:{self.uid}:{self.gid}"

    @classmethod
    def parse(cls, text: str) -> ChildUser:
        name, uid, gid = text.rsplit(":", 2)
        return cls(name, int(uid), int(gid))


def child_user(name: str, slot: int | None = None) -> ChildUser | None:
    """Whom document children run as: None unless this process is root (then it cannot
    drop to anyone, and needs no dropping from anyone else)."""
    if os.geteuid() != 0:
        return None
    candidates = ([f"{name}{slot}"] if slot is not None else []) + [name]
    for candidate in candidates:
        try:
            entry = pwd.getpwnam(candidate)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise ValueError(
                f"IMPORTER_CHILD_USER {candidate!r} is root: name an unprivileged user"
            )
        return ChildUser(candidate, entry.pw_uid, entry.pw_gid)
    raise ValueError(
        f"IMPORTER_CHILD_USER {name!r} names no user on this host: create it (useradd"
        f" --system {name}) or name another unprivileged one, such as nobody"
    )


def drop_to(user: ChildUser) -> None:
    """Become `user` for good: no supplementary groups, then the group, then the user."""
    os.setgroups([])
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    if os.getuid() != user.uid or os.geteuid() != user.uid:
        raise OSError(f"still uid {os.geteuid()} after dropping to {user.name}")


def enter_private_network() -> None:
    """A network namespace of this process's own, with nothing in it but a loopback that
    is down: no connection can be made. As root directly; otherwise inside a user
    namespace that maps this process's own user and group to themselves, where the
    kernel allows one. Raises OSError when neither is possible."""
    if os.geteuid() == 0:
        _unshare(CLONE_NEWNET)
        return
    uid, gid = os.getuid(), os.getgid()
    _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def make_non_dumpable() -> None:
    """No core dumps, no ptrace and no /proc/<pid>/environ or mem for same-user processes."""
    if _libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def _unshare(flags: int) -> None:
    if _libc().unshare(flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare: {os.strerror(code)}")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def network_isolation_available() -> str | None:
    """None if a process here can enter a network namespace of its own, else why not
    (tried in a short-lived child, so this process keeps its network)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            enter_private_network()
            message = b""
        except OSError as e:
            message = str(e).encode()[:200]
        os.write(writer, message)
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message.decode() or None

"""What the process that parses a PDF can reach: no network, no secrets, no privileges,
no other document.

The engine's fork server enters a network namespace of its own before it serves (so
every document child has no network at all). Each document then gets walls of its own
(`enter_document_namespaces`): a PID namespace in which it is process 1 and sees no
other process (nothing it starts outlives it: when process 1 dies the kernel kills the
rest), an IPC namespace (no System V or POSIX queue, semaphore or shared memory of
another), and a mount namespace whose /tmp, /var/tmp, /dev/shm and /run are its own (no
other document's page images, no Unix socket of a local service). When the worker runs
as root, the child drops to an unprivileged user after the fork and before it reads
anything, then enters a user namespace of its own, so the process limit counts this
document's processes only, and gives up every capability. The worker processes
themselves are made non-dumpable, so a child running as the same user cannot read their
memory or `/proc/<pid>/environ` (keys, database URL).

`IMPORTER_CHILD_USER` names the user, or a prefix: when users PREFIX0, PREFIX1, ... exist,
worker slot N's children run as PREFIXN.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pwd
import resource
import select
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MS_HIDE = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}  # by machine
_CAPABILITY_VERSION_3 = 0x20080522
PRIVATE_TMP = ("/tmp", "/var/tmp")  # the document's own directory, bound over each
EMPTY_DIRS = ("/run", "/dev/shm")  # an empty tmpfs over each: no sockets, no shared memory
NAMESPACE_LIMITS = {  # /proc/sys/user/ in a document's own user namespace
    **{
        f"max_{kind}_namespaces": 0
        for kind in ("user", "mnt", "net", "pid", "ipc", "uts", "cgroup", "time")
    },
    "max_inotify_instances": 8,
    "max_inotify_watches": 1024,
    "max_fanotify_groups": 0,
    "max_fanotify_marks": 0,
}


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


@dataclass(frozen=True)
class Walls:
    """What each document child gets, as far as this host allows.

    `namespaces`: PID, mount and IPC namespaces of its own (`enter_document_namespaces`);
    `own_user`: a user namespace of its own (`own_user_namespace`); `hidden`: directories
    covered, inside its mount namespace, by an empty read-only directory (the import
    roots, where every other document lies, and the data dir)."""

    namespaces: bool = True
    own_user: bool = True
    hidden: tuple[str, ...] = ()


ESSENTIAL = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/proc", "/dev")


def hideable(paths: Iterable[str | os.PathLike[str]]) -> tuple[str, ...]:
    """The directories among `paths` that a document may be kept from: not those its
    own mounts cover already (under /tmp, /run, ...), nor any that holds what it needs
    (the system, the interpreter, Tesseract's data, the fork server's directory)."""
    needed = [*ESSENTIAL, sys.prefix, sys.base_prefix, os.environ.get("TESSDATA_PREFIX", "/usr")]
    needed.append(tempfile.gettempdir())  # where the documents' own directories are made
    needed = [os.path.realpath(path) for path in needed]
    covered = [os.path.realpath(path) for path in (*PRIVATE_TMP, *EMPTY_DIRS)]
    found: list[str] = []
    for path in map(os.path.realpath, paths):
        if not os.path.isdir(path) or path in found:
            continue
        if any(_within(path, c) for c in covered):
            continue
        if not any(_within(n, path) or _within(path, n) for n in needed):
            found.append(path)
    return tuple(found)


def _within(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


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
    _unshare_user(CLONE_NEWNET)


def enter_document_namespaces(private_tmp: str, hidden: Sequence[str] = ()) -> Callable[[], bool]:
    """Walls around one document, entered by its freshly forked child (as root, or with
    the capabilities of the fork server's user namespace), before it drops privileges.

    This process stays outside as the document's keeper: it waits for the document and
    exits as it did (the same status, or the same signal), so whoever reaps it sees the
    document's own end. The document, forked into a new PID namespace as its process 1,
    returns from here with a descriptor that reads end-of-file once the keeper is gone
    (see `die_with_keeper`). Raises OSError when the walls cannot be built.
    """
    _unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount leaks out
    first, *others = PRIVATE_TMP
    _mount(private_tmp, first, None, _MS_BIND)
    for path in others:  # the same directory again (the first mount hides where it was)
        if os.path.isdir(path):
            _mount(first, path, None, _MS_BIND)
    for path in EMPTY_DIRS:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=1m")
    for path in hidden:  # its own file stays open: it came as a descriptor
        _mount("tmpfs", path, "tmpfs", _MS_HIDE, "size=4k,mode=555")
    lifeline, keeper_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(lifeline)
        _keep(pid)
    os.close(keeper_end)

    def keeper_gone() -> bool:  # its end of the pipe closed
        return bool(select.select([lifeline], [], [], 0)[0])

    die_with_parent(keeper_gone)
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)  # our processes only
    return keeper_gone


def die_with_parent(gone: Callable[[], bool]) -> None:
    """SIGKILL when the parent dies (set again after each change of credentials, which
    clears it); exit at once if `gone()` says it died before that."""
    if _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if gone():
        os._exit(1)


def _keep(pid: int) -> NoReturn:
    """The keeper's life: end as the document ended."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with contextlib.suppress(OSError, ValueError):
            signal.signal(number, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def own_user_namespace(processes: int) -> None:
    """A user namespace of this process's own that maps only its own user and group, so
    `processes` bounds this document's processes alone (the kernel counts processes per
    user per namespace); in it, no namespace may be made (the user's quota of them, shared
    with every other document, stays out of reach, and so do the capabilities a nested
    one would grant) and a few inotify instances at most; then `give_up_privileges`."""
    _set_dumpable(True)  # a process that changed user may not write its own maps otherwise
    try:
        _unshare_user()
    finally:
        _set_dumpable(False)
    for name, value in NAMESPACE_LIMITS.items():  # this namespace's own, while we may
        with contextlib.suppress(FileNotFoundError), open(f"/proc/sys/user/{name}", "w") as f:
            f.write(str(value))
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    give_up_privileges()


def give_up_privileges() -> None:
    """No capability anywhere, and no way to gain one: setuid programs run without
    their privilege."""
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    _capset_none()


def _unshare_user(flags: int = 0) -> None:
    """Enter a new user namespace (and the namespaces in `flags`) that maps this process's
    own user and group to themselves, and nothing else."""
    uid, gid = os.getuid(), os.getgid()
    _unshare(CLONE_NEWUSER | flags)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def _capset_none() -> None:
    """Empty effective, permitted and inheritable sets (and so no ambient ones)."""
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if _libc().syscall(_SYS_CAPSET[os.uname().machine], header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    def c(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    if _libc().mount(c(source), c(target), c(kind), flags, c(data or None)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {target}: {os.strerror(code)}")


def _set_dumpable(dumpable: bool) -> None:
    if _libc().prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def make_non_dumpable() -> None:
    """No core dumps, no ptrace and no /proc/<pid>/environ or mem for same-user processes."""
    _set_dumpable(False)


def _unshare(flags: int) -> None:
    if _libc().unshare(flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare: {os.strerror(code)}")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def network_isolation_available() -> str | None:
    """None if a process here can enter a network namespace of its own, else why not
    (tried in a short-lived child, so this process keeps its network)."""
    return _tried(enter_private_network)


def document_walls_available(user: ChildUser | None) -> str | None:
    """None if a document child here can get its own PID, mount and IPC namespaces (as
    the fork server makes them, after its network namespace), else why not. Tried in a
    short-lived child."""

    def walls() -> None:
        with contextlib.suppress(OSError):
            enter_private_network()
        enter_document_namespaces(tmp)
        if user is not None:
            drop_to(user)

    with tempfile.TemporaryDirectory(prefix="importer-walls-") as tmp:
        return _tried(walls)


def own_user_available(user: ChildUser | None) -> str | None:
    """None if a document child here, as `user`, can enter a user namespace of its own
    (an unprivileged one: a host may forbid those), else why not."""

    def own() -> None:
        with contextlib.suppress(OSError):
            enter_private_network()
        if user is not None:
            drop_to(user)
        own_user_namespace(processes=8)

    return _tried(own)


def available_walls(
    user: ChildUser | None, hidden: Iterable[str | os.PathLike[str]]
) -> tuple[Walls, list[str]]:
    """The walls this host allows for `user`'s documents, and a warning for each one it
    does not."""
    namespaces, own_user = document_walls_available(user), own_user_available(user)
    warnings = []
    if namespaces is not None:
        warnings.append(
            "document children share the host's processes, /tmp, /run and System V IPC, and"
            f" can read other documents' files and descriptors of the same user ({namespaces})"
        )
    if own_user is not None:
        warnings.append(
            "document children of one user share one process limit and may make namespaces"
            f" ({own_user})"
        )
    walls = Walls(
        namespaces is None, own_user is None, hideable(hidden) if namespaces is None else ()
    )
    return walls, warnings


def _tried(attempt: Callable[[], None]) -> str | None:
    """Run `attempt` in a forked child: None if it returned, else the OSError's text."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        code = 1
        try:
            attempt()
            code = 0
        except OSError as e:
            os.write(writer, str(e).encode()[:200])
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        message = pipe.read()
    _, status = os.waitpid(pid, 0)
    if message or status == 0:
        return message.decode() or None
    return f"the trial ended with status {os.waitstatus_to_exitcode(status)}"

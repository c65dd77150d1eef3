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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME = 32, 1024, 2048
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MS_RELATIME, _MS_STRICTATIME = 1 << 21, 1 << 24
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


def enter_document_namespaces(
    private_tmp: str, hidden: Sequence[str] = (), kept: Sequence[str] = ()
) -> Callable[[], bool]:
    """Walls around one document, entered by its freshly forked child (as root, or with
    the capabilities of the fork server's user namespace), before it drops privileges.

    `hidden` directories (outermost first) are covered by an empty read-only directory;
    `kept` ones, which lie inside them and hold what the document still needs, are bound
    back read-only at their own path (`workers.walls.hiding` plans both).

    This process stays outside as the document's keeper: it waits for the document and
    exits as it did (the same status, or the same signal), so whoever reaps it sees the
    document's own end. The document, forked into a new PID namespace as its process 1,
    returns from here with a descriptor that reads end-of-file once the keeper is gone
    (see `die_with_keeper`). Raises OSError when the walls cannot be built.
    """
    _unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount leaks out
    # held open, so each is bound from where it is even once a mount covers its path
    sources = [os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in kept]
    try:
        first, *others = PRIVATE_TMP
        _mount(private_tmp, first, None, _MS_BIND)
        for path in others:  # the same directory again (the first mount hides where it was)
            if os.path.isdir(path):
                _mount(first, path, None, _MS_BIND)
        for path in EMPTY_DIRS:
            if os.path.isdir(path):
                _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=1m")
        _hide(hidden, dict(zip(kept, sources, strict=True)))
    finally:
        for fd in sources:
            os.close(fd)
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


def _hide(hidden: Sequence[str], kept: dict[str, int]) -> None:
    """An empty read-only directory over each of `hidden`; inside them, each of `kept`
    (path -> an open descriptor of it) bound back read-only. A hidden directory that lies
    inside a kept one is covered once that is back."""
    inner = [h for h in hidden if any(_within(h, k) for k in kept)]
    outer = [h for h in hidden if h not in inner]
    for path in outer:  # writable until what lies in it is bound back
        _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=64k,mode=555")
    for path, fd in kept.items():
        _make_path(path, [h for h in outer if _within(path, h)][-1])
        _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
        _mount(None, path, None, flags | _kept_flags(os.statvfs(path).f_flag))
    for path in outer:
        _mount(None, path, None, _MS_REMOUNT | _MS_HIDE)
    for path in inner:  # its own file stays open: it came as a descriptor
        _mount("tmpfs", path, "tmpfs", _MS_HIDE, "size=4k,mode=555")


def _make_path(path: str, top: str) -> None:
    """The directories from `top` (a fresh tmpfs) down to `path`, each open to all for
    traversal only (the umask would make them this user's alone)."""
    parts = os.path.relpath(path, top).split(os.sep)
    current = top
    for part in parts:
        current = os.path.join(current, part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(current)
        os.chmod(current, 0o555)


def _kept_flags(st_flags: int) -> int:
    """The flags a bind remount must keep (the kernel refuses to clear them in a user
    namespace): noexec and the access-time mode of the mount it came from."""
    flags = _MS_NOEXEC if st_flags & os.ST_NOEXEC else 0
    if st_flags & os.ST_NOATIME:
        flags |= _MS_NOATIME
    elif st_flags & os.ST_RELATIME:
        flags |= _MS_RELATIME
    else:
        flags |= _MS_STRICTATIME
    if st_flags & os.ST_NODIRATIME:
        flags |= _MS_NODIRATIME
    return flags


def _within(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


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

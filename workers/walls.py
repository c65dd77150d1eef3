"""Which of the document walls (`workers.isolation`) stand on this host, and which
directories a document can be kept from.

Each wall is tried in a short-lived forked child, the way the fork server builds it, so
the answer is the kernel's, not a guess: a container without `CAP_SYS_ADMIN`, a seccomp
filter or an AppArmor profile that forbids `unshare` or `mount`, a host that forbids
unprivileged user namespaces. A worker refuses to start while a wall is missing
(`require`), unless the operator opts out with IMPORTER_WEAK_ISOLATION=1, which
`importer doctor` and `/metrics` then report as a failure.

The import roots and the data dir are covered, inside each document's mount namespace,
by an empty read-only directory (`hiding`). A root that holds what the document still
needs (the interpreter's environment, Tesseract's data, the programs on PATH) is hidden
all the same, and just those directories are bound back into it, read-only. Only a root
that holds or lies within the system's own directories (/usr, /etc, ...) stays in
sight, and is named with the reason wherever the walls are reported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from workers.isolation import (
    EMPTY_DIRS,
    PRIVATE_TMP,
    ChildUser,
    drop_to,
    enter_document_namespaces,
    enter_private_network,
    own_user_namespace,
)

ESSENTIAL = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/proc", "/dev")
WEAK_SETTING = "IMPORTER_WEAK_ISOLATION"
FIX = (
    "run the worker as root (its document children drop to IMPORTER_CHILD_USER), with"
    " CAP_SYS_ADMIN, allowed to call unshare and mount (no seccomp filter or AppArmor"
    " profile that forbids them) and unprivileged user namespaces allowed (sysctl"
    " user.max_user_namespaces > 0; on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0)."
    " In Docker: user root, cap_add SYS_ADMIN and security_opt apparmor=unconfined, as the"
    " worker service in docker-compose.yml has. Or set IMPORTER_WEAK_ISOLATION=1 to run"
    " without the missing walls (importer doctor and /metrics then report a failure)"
)


class WallsMissing(Exception):
    """A document wall cannot stand on this host, and the operator has not opted out."""


@dataclass(frozen=True)
class Missing:
    """A wall this host refuses: which, the kernel's reason, and what documents then share."""

    wall: str
    reason: str
    shared: str

    def warning(self) -> str:
        return f"no {self.wall} ({self.reason}): {self.shared}"


@dataclass(frozen=True)
class Hiding:
    """What each document is kept from, as its mount namespace will show it.

    `hidden`: covered by an empty read-only directory (outermost first); `kept`: bound
    back, read-only, inside a hidden one (what the document needs that lies there);
    `covered`: out of sight already (under its own /tmp, /var/tmp, /run or /dev/shm);
    `unhidden`: still in sight, each with the reason."""

    hidden: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    covered: tuple[str, ...] = ()
    unhidden: tuple[tuple[str, str], ...] = ()

    def warnings(self) -> list[str]:
        return [
            f"{path} is not hidden from documents ({why}): each document can list it and"
            " read what its user may read there"
            for path, why in self.unhidden
        ]


@dataclass(frozen=True)
class Walls:
    """What each document child gets, as far as this host allows (and the operator
    accepts): `network`, a network namespace of its own (entered by the fork server);
    `namespaces`, PID, mount and IPC namespaces of its own; `own_user`, a user namespace
    of its own; `hiding`, which directories its mount namespace covers."""

    network: bool = True
    namespaces: bool = True
    own_user: bool = True
    hiding: Hiding = Hiding()

    @property
    def hidden(self) -> tuple[str, ...]:
        return self.hiding.hidden if self.namespaces else ()

    @property
    def kept(self) -> tuple[str, ...]:
        return self.hiding.kept if self.namespaces else ()


def needs() -> list[str]:
    """The directories a document child still reads after its walls are up: the
    interpreter's environment and import path, Tesseract's data, the programs on PATH."""
    found = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]
    found += [entry for entry in sys.path if entry and os.path.isdir(entry)]
    found += [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry]
    if os.environ.get("TESSDATA_PREFIX"):
        found.append(os.environ["TESSDATA_PREFIX"])
    return _unique(os.path.realpath(path) for path in found if os.path.isdir(path))


def hiding(paths: Iterable[str | os.PathLike[str]], needed: Iterable[str] | None = None) -> Hiding:
    """Which of `paths` (import roots, the data dir) each document is kept from, and what
    must be bound back into them; `needed` defaults to `needs()`."""
    needed = needs() if needed is None else _unique(os.path.realpath(n) for n in needed)
    covers = [os.path.realpath(path) for path in (*PRIVATE_TMP, *EMPTY_DIRS)]
    hidden: list[str] = []
    covered: list[str] = []
    unhidden: list[tuple[str, str]] = []
    for path in _unique(os.path.realpath(os.fspath(p)) for p in paths):
        if not os.path.isdir(path):
            continue
        if any(_within(path, c) for c in covers):
            covered.append(path)
        elif system := next((e for e in ESSENTIAL if _within(e, path)), None):
            unhidden.append((path, f"it holds {system}, which every program needs"))
        elif system := next((e for e in ESSENTIAL if _within(path, e)), None):
            unhidden.append((path, f"it lies within {system}, which the programs need"))
        elif path in needed:
            unhidden.append((path, "the worker's interpreter or programs live in it"))
        else:
            hidden.append(path)
    hidden.sort(key=lambda p: p.count(os.sep))
    kept = [n for n in needed if any(_within(n, h) and n != h for h in hidden)]
    # a root inside another is out of sight with it, unless it lies in what is bound back
    hidden = [
        h
        for i, h in enumerate(hidden)
        if not any(_within(h, outer) for outer in hidden[:i]) or any(_within(h, k) for k in kept)
    ]
    kept = [k for k in kept if not any(_within(k, other) and k != other for other in kept)]
    return Hiding(tuple(hidden), tuple(kept), tuple(covered), tuple(unhidden))


def _within(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def _unique(paths: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def network_available() -> str | None:
    """None if a process here can enter a network namespace of its own, else why not
    (tried in a short-lived child, so this process keeps its network)."""
    return _tried(enter_private_network)


def namespaces_available(user: ChildUser | None, plan: Hiding = Hiding()) -> str | None:
    """None if a document child here can get its own PID, mount and IPC namespaces, with
    `plan`'s directories hidden (as the fork server makes them, after its network
    namespace), else why not."""

    def walls() -> None:
        with contextlib.suppress(OSError):
            enter_private_network()
        enter_document_namespaces(os.path.join(tmp, "tmp"), plan.hidden, plan.kept)
        if user is not None:
            drop_to(user)

    with tempfile.TemporaryDirectory(prefix="importer-walls-") as tmp:
        os.mkdir(os.path.join(tmp, "tmp"))
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


def available(
    user: ChildUser | None, hide: Iterable[str | os.PathLike[str]] = ()
) -> tuple[Walls, list[Missing]]:
    """The walls this host allows for `user`'s documents, and each one it refuses."""
    plan = hiding(hide)
    network, namespaces, own = (
        network_available(),
        namespaces_available(user, plan),
        own_user_available(user),
    )
    missing = []
    if network is not None:
        missing.append(
            Missing(
                "network namespace",
                network,
                "document children keep the network (the database, gearmand, the mail server)",
            )
        )
    if namespaces is not None:
        missing.append(
            Missing(
                "PID, mount and IPC namespaces",
                namespaces,
                "document children see every process and the host's /tmp, /run and IPC, and"
                " read the import roots, the data dir and, as the same user, other"
                " documents' files and descriptors",
            )
        )
    if own is not None:
        missing.append(
            Missing(
                "user namespace",
                own,
                "document children of one user share one process limit and may make"
                " namespaces of their own",
            )
        )
    walls = Walls(network is None, namespaces is None, own is None, plan)
    return walls, missing


def refusal(missing: Iterable[Missing]) -> str:
    """The error a worker stops with: each missing wall, what it would leave open, the fix."""
    lines = "; ".join(m.warning() for m in missing)
    return f"the document walls cannot stand on this host: {lines}. To fix: {FIX}"


def require(user: ChildUser | None, *, weak: bool) -> list[str]:
    """Check the walls before a worker starts: WallsMissing naming each missing wall and
    the fix, unless `weak` (IMPORTER_WEAK_ISOLATION), then one warning for each."""
    _, missing = available(user)
    if missing and not weak:
        raise WallsMissing(refusal(missing))
    return [f"{WEAK_SETTING}=1: {m.warning()}" for m in missing]


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
    try:
        with os.fdopen(reader, "rb") as pipe:
            message = pipe.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:  # a signal ending the caller (SIGTERM to `importer run`)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)  # none of our trials outlives us
        raise
    if message or status == 0:
        return message.decode() or None
    return f"the trial ended with status {os.waitstatus_to_exitcode(status)}"

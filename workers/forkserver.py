"""A warm parent that forks one fresh process per document, so no document pays an
interpreter's start-up.

The fork server is a fresh interpreter, started by the worker process with the same
clean environment the document child gets (no secrets, no database or gearmand
connections: it is spawned, never forked from the worker). It imports the reading code
once, then, for each request, forks a child into a session of its own and gives it the
file descriptors the worker sent along (stdin, stdout, stderr, then any others at 3, 4,
...). The worker reads the child's pipes itself; the fork server only forks, kills a
child's group when asked, and reaps each child, killing its group first, and reports its
exit status.

On the control socket (a SOCK_SEQPACKET socketpair) go the messages of
`workers.forkserver_messages`, file descriptors as SCM_RIGHTS:

    server -> worker  Ready                  once, when imported and waiting
    worker -> server  Fork + fds             one document child
    server -> worker  Forked  or  ForkFailed
    worker -> server  Kill                   SIGKILL to the child's group, if not reaped
    server -> worker  Exited                 whenever a child is reaped

The server exits when the worker closes its end (the worker died or replaced it), and
kills its children's groups first. A child dies with its fork server (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence

from workers import isolation
from workers.forkserver_messages import (
    MAX_CONTROL,
    Exited,
    Fork,
    Forked,
    ForkFailed,
    Kill,
    Ready,
    Report,
    decode_report,
    decode_request,
)
from workers.isolation import ChildUser, drop_to
from workers.walls import Walls
from workers.wire import MalformedMessage

MAX_FDS = 16  # file descriptors passed with one request
CHILD_PROCESSES = 64  # processes one document may run (without walls: all children of its user)
START_SECONDS = 30.0  # a fresh interpreter importing the reader, on a very busy machine
ANSWER_SECONDS = 10.0  # a running fork server answers a fork request in milliseconds


class ForkServerError(Exception):
    """The fork server is gone or misbehaved: replace it."""


# The worker's side ----------------------------------------------------------------------


class ForkServer:
    """A running fork server, seen from the worker process that started it."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None) -> None:
        """`cwd`, a directory made for it alone, is removed with all it holds once the
        server is gone."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.cwd = cwd
        try:
            self.proc = subprocess.Popen(
                [*argv, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # the terminal's ^C is for the worker, which drains
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.sock = mine
        self.owner = os.getpid()
        self.ready = False
        self.documents = 0
        self.exited: dict[int, int] = {}  # pid -> status, reported before it was asked for
        self.forgotten: set[int] = set()  # children whose exit nobody waits for

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start_child(self, fds: Sequence[int]) -> int:
        """Fork a child with these descriptors as its 0, 1, 2, 3, ...; returns its pid."""
        if not self.ready:
            hello = self._receive(time.monotonic() + START_SECONDS)
            if hello != Ready(self.pid):
                raise ForkServerError(f"fork server said {str(hello)[:100]} on start")
            self.ready = True
        self._send(Fork(), fds)
        answer = self._answer(time.monotonic() + ANSWER_SECONDS)
        if isinstance(answer, Forked):
            self.documents += 1
            return answer.pid
        if isinstance(answer, ForkFailed):
            raise ForkServerError(f"fork server cannot fork: {answer.reason[:200]}")
        raise ForkServerError(f"fork server said {str(answer)[:100]} to a fork request")

    def kill(self, pid: int) -> None:
        """SIGKILL the child's group, unless the server has already reaped it."""
        if pid not in self.exited:
            self._send(Kill(pid))

    def let_go(self, pid: int) -> None:
        """Kill the child's group, unless reaped, without waiting for it: the server kills
        and reaps it on its own, and its exit report is dropped when it comes."""
        status = self.exited.pop(pid, None)
        if status is None:
            self.forgotten.add(pid)
            self._send(Kill(pid))

    def wait(self, pid: int, timeout: float) -> int:
        """The child's exit status (Popen.returncode); subprocess.TimeoutExpired if it runs on."""
        deadline = time.monotonic() + timeout
        while pid not in self.exited:
            message = self._receive(deadline, timeout)
            if not self._filed(message):
                raise ForkServerError(f"fork server said {str(message)[:100]} out of turn")
        return self.exited.pop(pid)

    def close(self, timeout: float = 1.0) -> None:
        """Let it go: closing our end makes it kill what it still runs and exit."""
        self.sock.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.discard()
        self._remove_cwd()

    def discard(self) -> None:
        """Kill it (its children die with it) and reap it."""
        self.sock.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        self._remove_cwd()

    def _remove_cwd(self) -> None:
        """Its directory, with whatever a killed server's children left in it."""
        if self.cwd is not None and self.proc.returncode is not None:
            shutil.rmtree(self.cwd, ignore_errors=True)

    def _answer(self, deadline: float) -> Report:
        """The next message that is not an exit report (those are filed in `exited`)."""
        while True:
            message = self._receive(deadline)
            if not self._filed(message):
                return message

    def _filed(self, message: Report) -> bool:
        """File an exit report; False for any other message."""
        if not isinstance(message, Exited):
            return False
        if message.pid in self.forgotten:
            self.forgotten.discard(message.pid)
        else:
            self.exited[message.pid] = message.status
        return True

    def _send(self, message: Fork | Kill, fds: Sequence[int] = ()) -> None:
        try:
            socket.send_fds(self.sock, [message.encode()], list(fds))
        except OSError as e:
            raise ForkServerError(f"fork server gone ({e.strerror or e})") from e

    def _receive(self, deadline: float, timeout: float | None = None) -> Report:
        remaining = deadline - time.monotonic()
        try:
            readable, _, _ = select.select([self.sock], [], [], max(0.0, remaining))
            if not readable:
                if timeout is not None:
                    raise subprocess.TimeoutExpired("engine child", timeout)
                raise ForkServerError("fork server does not answer")
            data = self.sock.recv(MAX_CONTROL)
        except OSError as e:
            raise ForkServerError(f"fork server gone ({e.strerror or e})") from e
        if not data:
            raise ForkServerError("fork server gone (it closed its end)")
        try:
            return decode_report(data)
        except MalformedMessage as e:
            raise ForkServerError(f"fork server sent a malformed message: {e}") from e


# The server's side ----------------------------------------------------------------------


def serve(
    control_fd: int,
    target: Callable[[], int],
    user: ChildUser | None = None,
    walls: Walls | None = None,
) -> int:
    """The fork server's loop: fork a child running `target` per request, reap, report.

    Each child gets a private temporary directory, removed when it has been reaped, and
    the `walls` this host allows (`workers.walls`). With `user`, each child becomes
    that user right after the fork (the server itself keeps the privileges it needs to
    kill and reap them)."""
    walls = walls or Walls()
    ctl = socket.socket(fileno=control_fd)
    children: dict[int, tuple[int, str]] = {}  # pidfd -> pid, private directory
    try:
        _send(ctl, Ready(os.getpid()))
        while True:
            readable, _, _ = select.select([control_fd, *children], [], [])
            for pidfd in readable:
                if pidfd != control_fd:
                    _send(ctl, _reap(pidfd, *children.pop(pidfd)))
            if control_fd not in readable:
                continue
            data, fds, flags, _ = socket.recv_fds(ctl, MAX_CONTROL, MAX_FDS)
            try:
                if not data:
                    return 0  # the worker is gone, or done with us
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise ValueError("truncated request")
                request = decode_request(data)
                if isinstance(request, Fork):
                    private = _private_directory(user)
                    try:
                        pid = _fork(fds, target, user, private, walls)
                        children[_pidfd(pid)] = (pid, private)
                    except BaseException:
                        shutil.rmtree(private, ignore_errors=True)
                        raise
                    _send(ctl, Forked(pid))
                elif any(request.pid == pid for pid, _ in children.values()):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(request.pid, signal.SIGKILL)
            except OSError as e:
                _send(ctl, ForkFailed(f"{type(e).__name__}: {e}"))
            finally:
                for fd in fds:
                    os.close(fd)
    except (BrokenPipeError, ConnectionResetError):
        return 0
    except ValueError as e:  # MalformedMessage among them
        print(f"engine fork server: bad request: {e}", file=sys.stderr)
        return 2
    finally:
        for pidfd, (pid, private) in children.items():
            _reap(pidfd, pid, private)


def _send(ctl: socket.socket, message: Report) -> None:
    ctl.send(message.encode())


def _pidfd(pid: int) -> int:
    """A descriptor that turns readable when the child exits; without one, no child."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


def _reap(pidfd: int, pid: int, private: str) -> Exited:
    """Kill what is left of the child's group, then reap the child (its pid names the
    group until then, so no other process can have taken it), and remove its files."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    shutil.rmtree(private, ignore_errors=True)
    return Exited(pid, os.waitstatus_to_exitcode(status))


def _private_directory(user: ChildUser | None) -> str:
    """A directory only the server can rename or remove, holding the child's `tmp`, which
    only the child's user can enter: its page images, its working directory."""
    private = tempfile.mkdtemp(prefix="importer-doc-")
    os.chmod(private, 0o711)
    tmp = os.path.join(private, "tmp")
    os.mkdir(tmp, 0o700)
    if user is not None:
        os.chown(tmp, user.uid, user.gid)
    return private


def _fork(
    fds: list[int],
    target: Callable[[], int],
    user: ChildUser | None,
    private: str,
    walls: Walls,
) -> int:
    if len(fds) < 3:
        raise ValueError(f"a fork request needs stdin, stdout and stderr, got {len(fds)} fds")
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1

    def parent_gone() -> bool:
        return os.getppid() != parent

    try:
        _become_child(fds, parent_gone)
        tmp = os.path.join(private, "tmp")
        if walls.namespaces:  # from here on this is the document, its keeper stays outside
            parent_gone = isolation.enter_document_namespaces(tmp, walls.hidden, walls.kept)
            tmp = isolation.PRIVATE_TMP[0]
        os.chdir(tmp)
        os.environ["TMPDIR"] = tempfile.tempdir = tmp
        if user is not None:
            drop_to(user)
            isolation.die_with_parent(parent_gone)  # changing credentials cleared it
        if walls.own_user:  # its processes, and no more: a fork bomb in a parser stops here
            isolation.own_user_namespace(CHILD_PROCESSES)
        else:
            if user is not None:
                resource.setrlimit(resource.RLIMIT_NPROC, (CHILD_PROCESSES,) * 2)
            isolation.give_up_privileges()
        code = target()
    except BaseException:  # noqa: BLE001 - a forked child never returns into the server
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    raise AssertionError("unreachable")


def _become_child(fds: list[int], parent_gone: Callable[[], bool]) -> None:
    """A session of its own (one signal reaches everything it runs), death with the fork
    server, and nothing of the server's open files but the descriptors it was sent."""
    os.setsid()
    isolation.die_with_parent(parent_gone)
    base = max(fds) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base) for fd in fds]
    for target, fd in enumerate(moved):
        os.dup2(fd, target, inheritable=target < 3)
    os.closerange(len(moved), max(os.sysconf("SC_OPEN_MAX"), base + len(moved)))

"""The document engine: a document's pages, read inside an isolated child process.

Poppler, Pillow and Tesseract have histories of crashes, infinite loops and memory
bombs on hostile files, and the worker that calls us must survive all of them. So
`process_document` runs the reading in a child process with its own process group and
resource limits, streams each page back as soon as it is done, and on a wall-clock
timeout kills the whole group (pdftoppm and tesseract included). `iter_pages` is the
same reading without the isolation, for tests and tools.

Per page, the PDF's own text layer is used when it holds real text; otherwise that one
page is rendered to a gray image and read by Tesseract.

Each document gets a fresh process, forked by this worker's fork server
(`workers.forkserver`): a warm interpreter started with the same clean environment, that
has imported the reading code once, so a document pays a fork, not an interpreter's
start-up. The child shares nothing with the worker (no threads, locks, connections or
secrets: the fork server was spawned, never forked from the worker), it starts in its
own session so one signal reaches everything it runs, its stdin, stdout and stderr are
pipes the worker made and passed along, and its results come back as JSON lines
(`workers.messages`), not pickle, so even a subverted child cannot make the caller run
code, and every line is checked against its type before the caller sees it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import logging
import os
import pkgutil
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from typing import BinaryIO

from importer.states import TextLayerMode
from workers import isolation, messages
from workers.document import (
    MB,
    ChildCrashed,
    DocumentError,
    DocumentInfo,
    DocumentTimeout,
    FileUnreadable,
    Limits,
    OutOfMemory,
    OverLimit,
    PageResult,
    PageTimeout,
)
from workers.forkserver import ForkServer, ForkServerError
from workers.isolation import ChildUser
from workers.messages import (
    MAX_MESSAGE,
    Done,
    Error,
    Info,
    Message,
    Page,
    Request,
    Step,
)
from workers.reader import iter_pages
from workers.tools import signal_name
from workers.walls import WEAK_SETTING, Missing, refusal
from workers.walls import available as available_walls
from workers.wire import MalformedMessage

log = logging.getLogger(__name__)

GRACE = 2.0  # seconds the caller waits past the child's own timeouts before killing it
MAX_LOG_LINE = 64 * 1024
REAP_TIMEOUT = 30.0  # a SIGKILLed child is gone at once unless stuck in the kernel (NFS)
EXIT_OUT_OF_MEMORY = 70  # the child's exit status after a MemoryError
EXIT_OUT_OF_CPU = 71  # after SIGXCPU
MAX_OPEN_FILES = 256  # the child and each program it runs
CHILD_FD = 3  # where the child finds the document's open descriptor (after stdin/out/err)
EXIT_NO_WALLS = 3  # the fork server's exit status when a wall cannot stand (and no opt-out)


# Isolation ---------------------------------------------------------------------------


def process_document(
    path: str | os.PathLike[str],
    *,
    lang: str = "eng",
    limits: Limits = Limits(),
    skip_pages: Collection[int] = (),
    text_layer: TextLayerMode | str = TextLayerMode.auto,
    fd: int | None = None,
    archive_fd: int | None = None,
) -> Iterator[DocumentInfo | PageResult]:
    """Yields DocumentInfo first, then one PageResult per page in page order (pages in
    skip_pages are not processed, so a retried document can resume); raises DocumentError.

    The child inherits an open descriptor of the file and reads the document only
    through it: `fd` when the caller opened (and checked) the file, else one opened here;
    `path` then only names it in messages. With `archive_fd`, a file open for writing, the
    child writes the document's searchable copy to it before it says it is done
    (`workers.archive`); the caller syncs it and gives it its name.

    The reading happens in a child process; nothing the PDF does can take this process
    down. Leaving the loop early (break, an exception, closing the generator) kills the
    child and its programs at once, and the page images always go with them.
    """
    skip = sorted({int(n) for n in skip_pages})
    request = Request(
        path=os.path.abspath(path),
        lang=lang,
        limits=limits,
        skip=tuple(skip),
        text_layer=TextLayerMode(text_layer),
        fd=CHILD_FD,
        archive_fd=None if archive_fd is None else CHILD_FD + 1,
        log_level=logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.INFO,
    )
    own_fd = None
    if fd is None:  # the child never opens a name: it gets this process's open file
        try:
            fd = own_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise FileUnreadable(f"cannot read {path}: {e.strerror or e}") from e
    child: _Child | None = None
    try:
        child = _start_child((fd,) if archive_fd is None else (fd, archive_fd))
        log.debug("engine child %d reads %s", child.pid, request.path)
        assert child.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # an early death shows in the exit status
            child.stdin.write(request.encode())
            child.stdin.close()
        yield from _Watch(child, limits, frozenset(skip)).run()
    finally:
        if child is not None:
            _kill_group(child)
        if own_fd is not None:
            os.close(own_fd)
        _recycle()


# The fork server: one per worker process, replaced after MAX_DOCUMENTS or any oddity.

MAX_DOCUMENTS = 200
DEFAULT_CHILD_USER = "nobody"
_server: ForkServer | None = None
_user: tuple[ChildUser | None] | None = None  # set by configure(), else the default
_hidden: tuple[str, ...] = ()
_weak = False


def configure(
    *,
    child_user: ChildUser | None,
    hidden: Sequence[str | os.PathLike[str]] = (),
    weak: bool = False,
) -> None:
    """Whom this process's document children run as (None: as this process's user),
    which directories they must not see (the import roots and the data dir: every other
    document and the database; the child reads its own file through a descriptor), and
    whether they may go without the walls this host refuses (IMPORTER_WEAK_ISOLATION;
    otherwise the fork server refuses to serve)."""
    global _user, _hidden, _weak
    stop_forkserver()
    _user = (child_user,)
    _hidden = tuple(os.fspath(path) for path in hidden)
    _weak = weak


def _child_user() -> ChildUser | None:
    global _user
    if _user is None:
        _user = (isolation.child_user(DEFAULT_CHILD_USER),)
    return _user[0]


def start_forkserver() -> None:
    """Start this process's fork server now, so that it is warm by the first document."""
    _forkserver()


def stop_forkserver() -> None:
    global _server
    if _server is not None and _server.owner == os.getpid():
        _server.close()
    _server = None


def forkserver_pid() -> int | None:
    """The pid of this process's fork server, if it runs (for tests and tools)."""
    return _server.pid if _server is not None and _server.owner == os.getpid() else None


def _forkserver() -> ForkServer:
    global _server
    if _server is None or _server.owner != os.getpid():
        user = _child_user()
        argv = [sys.executable, "-I", "-m", __name__, "--forkserver"]  # -I: no cwd, no PYTHON*
        argv += ["--user", user.argument()] if user is not None else []
        argv += [f"--hide={path}" for path in _hidden]
        argv += ["--weak"] if _weak else []
        # its cwd, where its children's own directories are made: it goes with the server
        home = tempfile.mkdtemp(prefix="importer-forkserver-")
        os.chmod(home, 0o711)
        _server = ForkServer(argv, {**_child_environment(), "TMPDIR": home}, cwd=home)
    return _server


def _discard_forkserver(server: ForkServer, why: str) -> None:
    global _server
    log.warning("engine fork server %d replaced: %s", server.pid, why)
    server.discard()
    if _server is server:
        _server = None


def _recycle() -> None:
    """A fork server that has served its share is replaced by a fresh one (closing its
    socket makes it kill and reap what it still runs)."""
    global _server
    if _server is not None and _server.documents >= MAX_DOCUMENTS:
        _server.close()
        _server = None
        _forkserver()


def _forget_after_fork() -> None:
    """A forked process must not use its parent's fork server; it starts its own."""
    global _server
    if _server is not None:
        _server.sock.close()
    _server = None


os.register_at_fork(after_in_child=_forget_after_fork)


def _start_child(inherit: Sequence[int] = ()) -> _Child:
    """A fresh document child from the fork server; a dead server is replaced once.

    `inherit` are descriptors the child gets as CHILD_FD, CHILD_FD + 1, ... (the caller
    keeps and closes its own)."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    theirs = [stdin_r, stdout_w, stderr_w]
    try:
        for attempt in (1, 2):
            server = _forkserver()
            try:
                pid = server.start_child([*theirs, *inherit])
                break
            except ForkServerError as e:
                _discard_forkserver(server, str(e))
                if attempt == 2:
                    raise ChildCrashed(f"cannot start a worker child: {e}") from e
            except OSError as e:
                raise ChildCrashed(f"cannot start a worker child: {e}") from e
    except BaseException:
        for fd in (stdin_w, stdout_r, stderr_r):
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    return _Child(
        server,
        pid,
        open(stdin_w, "wb", buffering=0),  # the three are closed by _kill_group
        open(stdout_r, "rb", buffering=0),
        open(stderr_r, "rb", buffering=0),
    )


class _Child:
    """A document child of the fork server, as the worker sees it (Popen's shape)."""

    def __init__(
        self, server: ForkServer, pid: int, stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO
    ) -> None:
        self.server = server
        self.pid = pid
        self.stdin: BinaryIO | None = stdin
        self.stdout: BinaryIO | None = stdout
        self.stderr: BinaryIO | None = stderr
        self.returncode: int | None = None
        self.lost: str | None = None  # why the exit status will never be known
        self.done = False  # it sent every page and closed its pipes: it is exiting

    def wait(self, timeout: float) -> int | None:
        """The exit status (None if lost with the fork server); TimeoutExpired if it runs on."""
        if self.returncode is None and self.lost is None:
            try:
                self.returncode = self.server.wait(self.pid, timeout)
            except ForkServerError as e:
                self._lose(str(e))
        return self.returncode

    def kill_group(self) -> None:
        if self.returncode is not None or self.lost is not None:
            return  # reaped: the server killed the group before that
        try:
            self.server.kill(self.pid)
        except ForkServerError as e:
            self._lose(str(e))

    def let_go(self) -> None:
        """A child that is done is not waited for: the server kills what is left of its
        group and reaps it while we go on with the next document."""
        if self.returncode is None and self.lost is None:
            try:
                self.server.let_go(self.pid)
            except ForkServerError as e:
                self._lose(str(e))

    def _lose(self, why: str) -> None:
        """The fork server died or misbehaved: replace it, and kill the group from here.

        The child dies with its server (PR_SET_PDEATHSIG) and is reaped by init; what
        it ran keeps the group, and so its id, alive until this kill reaches it.
        """
        self.lost = why
        _discard_forkserver(self.server, why)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


# What the child may see of our environment: enough to find its programs and data, and
# none of the operator's secrets (IMPORTER_SECRET_KEYS, database passwords).
_CHILD_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "TESSDATA_PREFIX",
)


def _child_environment() -> dict[str, str]:
    return {key: os.environ[key] for key in _CHILD_ENV if key in os.environ}


class _Watch:
    """The parent's side: relays the child's messages and enforces the wall clock."""

    def __init__(self, proc: _Child, limits: Limits, skip: frozenset[int]):
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.limits = limits
        self.skip = skip
        self.pages = 0
        self.page: int | None = None  # the page being worked on, once the count is known
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ, "out")
        self.selector.register(proc.stderr, selectors.EVENT_READ, "err")
        self.out = bytearray()  # the start of a message line
        self.lines: deque[bytes] = deque()  # whole message lines, not yet decoded
        self.err = bytearray()
        self.last_err = ""
        self.eof = False

    def run(self) -> Iterator[DocumentInfo | PageResult]:
        try:
            yield from self._relay()
        finally:
            self.selector.close()

    def _relay(self) -> Iterator[DocumentInfo | PageResult]:
        doc_deadline = time.monotonic() + self.limits.document_timeout + GRACE
        while True:
            deadline = min(time.monotonic() + self.limits.page_timeout + GRACE, doc_deadline)
            message = self._next(deadline, doc_deadline)
            if isinstance(message, Done):
                self._drain(time.monotonic() + GRACE)
                self.proc.done = not self.selector.get_map()  # it closed both pipes
                return
            if isinstance(message, Error):
                raise message.exception()
            if isinstance(message, Info):
                self.pages = message.pages
                self._advance(0)
                yield DocumentInfo(message.pages)
            elif isinstance(message, Page):
                self._advance(message.number)
                yield message.result()
            # a Step: the child is working, and the page's clock starts again

    def _advance(self, done: int) -> None:
        following = (n for n in range(done + 1, self.pages + 1) if n not in self.skip)
        self.page = next(following, None)

    def _next(self, deadline: float, doc_deadline: float) -> Message:
        """The child's next message; a dead or overdue child becomes a DocumentError."""
        while not self.lines:
            if self.eof:
                raise self._death()
            if len(self.out) > MAX_MESSAGE:
                raise OverLimit(f"more than {MAX_MESSAGE // MB} MB of text {self._where()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._overdue(deadline >= doc_deadline)
            for key, _ in self.selector.select(remaining):
                self._read(key)
        line = self.lines.popleft()
        if len(line) > MAX_MESSAGE:
            raise OverLimit(f"more than {MAX_MESSAGE // MB} MB of text {self._where()}")
        try:
            return messages.decode(line)
        except MalformedMessage as e:
            raise ChildCrashed(f"worker child sent a malformed message: {e}") from e

    def _drain(self, deadline: float) -> None:
        """Read what is left on both pipes until the child closes them (it is exiting)."""
        while self.selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(remaining):
                self._read(key)

    def _read(self, key: selectors.SelectorKey) -> None:
        chunk = os.read(key.fd, 1 << 20)
        if not chunk:
            self.selector.unregister(key.fileobj)
            self.eof = self.eof or key.data == "out"
        elif key.data == "out":
            self.out += chunk
            if b"\n" in chunk:
                *lines, rest = bytes(self.out).split(b"\n")
                self.out[:] = rest
                self.lines.extend(lines)
        else:
            self.err += chunk
            if b"\n" in chunk or len(self.err) > MAX_LOG_LINE:
                *lines, rest = bytes(self.err).split(b"\n")
                self.err[:] = rest[-MAX_LOG_LINE:]
                for raw in lines:
                    self._relay_log(raw[:MAX_LOG_LINE].decode("utf-8", "replace"))

    def _relay_log(self, line: str) -> None:
        """Log what the child said, at the level it said it (its lines are "LEVEL name: ...")."""
        if not line.strip():
            return
        self.last_err = line.strip()
        level_name, _, rest = line.partition(" ")
        level = logging.getLevelName(level_name)
        if isinstance(level, int):
            log.log(level, "engine child: %s", rest)
        else:
            log.warning("engine child: %s", line)

    def _overdue(self, whole_document: bool) -> DocumentError:
        _kill_group(self.proc)
        if whole_document:
            return DocumentTimeout(
                f"the document took longer than {self.limits.document_timeout:g} s"
                f" (IMPORTER_DOCUMENT_TIMEOUT_SECONDS); stopped {self._where()}"
            )
        return PageTimeout(
            f"no progress for {self.limits.page_timeout:g} s {self._where()}"
            " (IMPORTER_PAGE_TIMEOUT_SECONDS)"
        )

    def _death(self) -> DocumentError:
        self._drain(time.monotonic() + GRACE)
        try:
            code = self.proc.wait(GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
            code = self.proc.returncode
        where = self._where()
        if code is None and self.proc.lost is not None:
            return ChildCrashed(f"worker child lost {where}: {self.proc.lost}")
        if code == EXIT_OUT_OF_MEMORY:
            limit = self.limits.memory_bytes // MB
            return OutOfMemory(
                f"worker child ran out of memory {where} (limit {limit} MB,"
                " IMPORTER_CHILD_MEMORY_MB)"
            )
        if code in (-signal.SIGXCPU, EXIT_OUT_OF_CPU):
            return ChildCrashed(
                f"worker child ran out of CPU time {where} (limit"
                f" {self.limits.cpu_seconds} s, IMPORTER_CHILD_CPU_SECONDS)"
            )
        if code is not None and code < 0:
            name = signal_name(-code)
            return ChildCrashed(f"worker child killed by signal {-code} ({name}) {where}")
        said = f": {self.last_err[:200]}" if self.last_err else ""
        return ChildCrashed(f"worker child stopped (exit status {code}) {where}{said}")

    def _where(self) -> str:
        if self.page is not None:
            return f"on page {self.page}"
        return "after the last page" if self.pages else "while opening the document"


def _kill_group(proc: _Child) -> None:
    """Kill the child's process group (pdftoppm, tesseract and all), then reap the child.

    The group is killed before the child is reaped: until then its pid, which names
    the group, cannot be reused by an unrelated process. The fork server, the child's
    parent, does both in that order.
    """
    if proc.done:
        proc.let_go()
    else:
        _kill_and_reap(proc)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _kill_and_reap(proc: _Child) -> None:
    proc.kill_group()
    try:
        proc.wait(REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.error("engine child %d survives SIGKILL (stuck in the kernel?)", proc.pid)
        proc._lose("a child survived SIGKILL")


# The child ----------------------------------------------------------------------------


def child_main() -> int:
    """The child's life: read the request, limit itself, read the document, report.

    Messages (`workers.messages`) go out one line each on the original stdout; fd 1 is
    pointed at stderr first, so nothing a library prints can garble them.
    """
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    request = Request.decode(_read_all(0))
    _apply_limits(request.limits, archive_bytes(request))
    logging.basicConfig(
        level=request.log_level,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # Python code running past the CPU limit: as process 1 of its namespace the child
    # would ignore the signal's default action, and wait for the hard limit's SIGKILL.
    signal.signal(signal.SIGXCPU, lambda *_: os._exit(EXIT_OUT_OF_CPU))

    def send(message: Message) -> None:
        channel.write(message.encode())
        channel.flush()

    pages = iter_pages(
        request.path,
        lang=request.lang,
        limits=request.limits,
        skip_pages=request.skip,
        work_dir=tempfile.gettempdir(),  # the child's own (see workers.forkserver)
        on_step=lambda: send(Step()),
        text_layer=request.text_layer,
        fd=request.fd,
        archive_fd=request.archive_fd,
    )
    try:
        for item in pages:
            send(Info(item.pages) if isinstance(item, DocumentInfo) else Page.of(item))
        send(Done())
    except DocumentError as e:
        send(Error.of(e))
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)  # reporting could need memory; the status says it
    except BrokenPipeError:
        return 0  # the parent has stopped listening; nothing is left to do
    except Exception as e:
        log.exception("engine child failed on %s", request.path)
        send(Error(ChildCrashed.__name__, f"worker child failed: {type(e).__name__}: {e}"))
    return 0


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def archive_bytes(request: Request) -> int:
    """Room for the searchable copy: the original twice over (its pages, and what pypdf
    may write of them uncompressed), plus the text; 0 when none is made."""
    if request.archive_fd is None:
        return 0
    return 2 * os.fstat(request.fd).st_size + 16 * MB


def _apply_limits(limits: Limits, archive: int = 0) -> None:
    """Limits on the child, inherited by every program it runs.

    The file-size limit leaves room for one gray page image at the pixel cap, or for the
    searchable copy when it is larger; a core dump of a crashed renderer is of no use here
    and could be large.
    """
    _lower(resource.RLIMIT_AS, limits.memory_bytes)
    _lower(resource.RLIMIT_CPU, limits.cpu_seconds, hard_extra=5)
    _lower(resource.RLIMIT_FSIZE, max(limits.max_page_pixels + 16 * MB, archive))
    _lower(resource.RLIMIT_CORE, 0)
    _lower(resource.RLIMIT_NOFILE, MAX_OPEN_FILES)


def _lower(kind: int, value: int, *, hard_extra: int = 0) -> None:
    """Set a limit, never above one already in force (the operator's `ulimit` wins)."""
    soft, hard = resource.getrlimit(kind)
    if soft != resource.RLIM_INFINITY:
        value = min(value, soft)
    new_hard = value + hard_extra
    if hard != resource.RLIM_INFINITY:
        value, new_hard = min(value, hard), min(new_hard, hard)
    resource.setrlimit(kind, (value, new_hard))


def preload() -> None:
    """Load now what a document child would load on first use: behind its walls the
    interpreter's environment may be out of its sight (a virtual environment under the
    temp dir, which its own /tmp covers) or unreadable to its user, and an import that
    fails there is taken for a broken file. pypdf imports its filters and codecs on the
    first stream it decodes (an encrypted PDF's cross-reference stream: "corrupt"
    instead of "encrypted"); Pillow its format plugins on the first open (pdftoppm's
    PGM: no page could be judged blank)."""
    import pypdf
    from PIL import Image, ImageFile  # noqa: F401

    for module in pkgutil.walk_packages(pypdf.__path__, f"{pypdf.__name__}."):
        with contextlib.suppress(ImportError):  # an optional backend that is not installed
            importlib.import_module(module.name)
    Image.preinit()  # BMP, GIF, JPEG, PNG and PPM (PGM among them)


def forkserver_main(argv: list[str]) -> int:
    """`python -m workers.engine --forkserver FD`: serve document children on FD."""
    import gc

    from workers import forkserver

    parser = argparse.ArgumentParser(prog="python -m workers.engine --forkserver")
    parser.add_argument("--user", type=isolation.ChildUser.parse, help="NAME:UID:GID")
    parser.add_argument("--hide", action="append", default=[], help="a directory to hide")
    parser.add_argument("--weak", action="store_true", help="serve without the walls refused")
    parser.add_argument("fd", type=int, help="the control socket")
    if argv[:1] != ["--forkserver"]:
        parser.print_usage(sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as e:
        return 2 if e.code else 0
    user = args.user
    preload()
    from workers import probe

    for warning in probe.start_up():  # every child inherits the answer: no probe per document
        print(f"WARNING engine fork server: {warning}", file=sys.stderr)
    try:
        isolation.enter_private_network()
        outside = None
    except OSError as e:
        outside = str(e)
    walls, missing = available_walls(user, args.hide)
    if outside is not None and walls.network:  # a trial got in where we did not
        missing.insert(0, Missing("network namespace", outside, "children keep the network"))
        walls = dataclasses.replace(walls, network=False)
    if missing and not args.weak:
        print(f"ERROR engine fork server: {refusal(missing)}", file=sys.stderr)
        return EXIT_NO_WALLS
    warnings = [f"{WEAK_SETTING}=1: {m.warning()}" for m in missing]
    for warning in [*warnings, *walls.hiding.warnings()]:
        print(f"WARNING engine fork server: {warning}", file=sys.stderr)
    gc.freeze()  # what is imported now stays shared with every child, untouched by gc
    return forkserver.serve(args.fd, child_main, user, walls)


if __name__ == "__main__":
    from workers.engine import forkserver_main as _main  # the importable copy, not __main__'s

    sys.exit(_main(sys.argv[1:]))

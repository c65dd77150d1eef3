"""The engine's fork server: one warm parent per worker process, a fresh child per document.

Observed through /proc on real processes: which pid read which document, what the fork
server's environment and open files are, and what is left after a kill.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.test_engine import MISSING, SAMPLES, children_of, group_members, group_members_now
from workers import engine
from workers.document import ChildCrashed, DocumentInfo, Limits, PageResult, PageTimeout
from workers.engine import forkserver_pid, process_document

pytestmark = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"), reason=f"not installed: {', '.join(MISSING)}"
)

BORN = SAMPLES / "born_digital.pdf"
SCANNED = SAMPLES / "scanned_letter.pdf"


@pytest.fixture(autouse=True)
def fresh_forkserver() -> Iterator[None]:
    """Each test starts without a fork server and leaves none behind."""
    engine.stop_forkserver()
    yield
    engine.stop_forkserver()


@pytest.fixture
def slow_renderer(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A `pdftoppm` first on PATH that runs for a minute: a program the child waits on."""
    bin_dir = shared_tmp / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "pdftoppm"
    wrapper.write_text("#!/bin/sh\nexec sleep 60\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield  # the fork server started by the test sees this PATH


@pytest.fixture
def children(caplog: pytest.LogCaptureFixture) -> Iterator[list[int]]:
    """The pids of the document children started so far, in order (from the engine's log)."""
    caplog.set_level(logging.DEBUG, logger="workers.engine")
    started: list[int] = []

    class Noting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg == "engine child %d reads %s":
                assert isinstance(record.args, tuple)
                started.append(int(str(record.args[0])))

    handler = Noting()
    logging.getLogger("workers.engine").addHandler(handler)
    yield started
    logging.getLogger("workers.engine").removeHandler(handler)


def read(path: Path, children: list[int], **kwargs: object) -> tuple[int, int, list[PageResult]]:
    """Read a document; return (its child's pid, the fork server's pid, its pages)."""
    items = process_document(path, **kwargs)  # type: ignore[arg-type]
    assert isinstance(next(items), DocumentInfo)
    server = forkserver_pid()  # the one that forked this child (replaced only at the end)
    assert server is not None and children
    return children[-1], server, [item for item in items if isinstance(item, PageResult)]


def current_child(children: list[int]) -> int:
    server = forkserver_pid()
    assert server is not None and children
    assert children_of(server) == [children[-1]]
    return children[-1]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def sockets_of(pid: int) -> list[str]:
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            found.append(f"{fd.name} -> {target}")
    return found


def test_each_document_gets_a_fresh_child_of_one_fork_server(children: list[int]) -> None:
    first_child, first_server, first_pages = read(BORN, children)
    second_child, second_server, second_pages = read(BORN, children)
    assert first_child != second_child
    assert first_server == second_server
    assert [p.text for p in first_pages] == [p.text for p in second_pages]
    assert len(first_pages) == 3
    # A child that is done is reaped by the server while the worker goes on.
    assert wait_until(lambda: not children_of(first_server)), children_of(first_server)
    assert not alive(first_child) and not alive(second_child)


def test_fork_server_killed_between_documents_is_replaced(children: list[int]) -> None:
    _, server, _ = read(BORN, children)
    os.kill(server, signal.SIGKILL)
    child, replacement, pages = read(BORN, children)
    assert replacement != server
    assert len(pages) == 3
    assert child not in (server, replacement)


def test_fork_server_killed_mid_document_fails_only_that_document(children: list[int]) -> None:
    """Its child dies with it (and the child's programs with the group), the next one reads."""
    items = process_document(SCANNED)
    assert isinstance(next(items), DocumentInfo)
    child = current_child(children)
    server = forkserver_pid()
    assert server is not None
    home = Path(f"/proc/{server}/cwd").resolve()  # where its children's directories are
    assert [p.name for p in home.iterdir()] != [], "the child has no directory of its own"
    os.kill(server, signal.SIGKILL)
    with pytest.raises(ChildCrashed) as caught:
        list(items)
    assert caught.value.transient
    assert group_members(child) == []
    assert not home.exists(), "a killed fork server's directory (page images) outlived it"
    _, replacement, pages = read(BORN, children)
    assert replacement != server and len(pages) == 3


def test_hung_child_is_killed_with_its_group_and_the_next_document_reads(
    children: list[int], slow_renderer: None
) -> None:
    items = process_document(SCANNED, limits=Limits(page_timeout=1.5))
    assert isinstance(next(items), DocumentInfo)
    child = current_child(children)
    server = forkserver_pid()
    assert wait_until(lambda: "sleep" in commands(group_members_now(child))), "no render"
    os.kill(child, signal.SIGSTOP)
    with pytest.raises(PageTimeout):
        list(items)
    assert group_members(child) == []
    again, same_server, pages = read(BORN, children)
    assert same_server == server, "a child's death does not cost the fork server"
    assert again != child and len(pages) == 3


def commands(pids: list[int]) -> list[str]:
    names = []
    for pid in pids:
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


def test_fork_server_holds_no_secrets_and_no_sockets_but_its_own(
    monkeypatch: pytest.MonkeyPatch, children: list[int]
) -> None:
    monkeypatch.setenv("IMPORTER_SECRET_KEYS", "k1:do-not-leak")
    monkeypatch.setenv("IMPORTER_DATABASE_URL", "postgresql+psycopg://u:pw@localhost/db")
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        _, server, _ = read(BORN, children)
        environ = Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith(b"IMPORTER_")], environ
        assert len(sockets_of(server)) == 1, sockets_of(server)  # its control socket
        assert listener.fileno() >= 0


def test_document_child_keeps_only_the_descriptors_it_was_given(children: list[int]) -> None:
    """Not the fork server's control socket (a child could forge exit reports on it)."""
    items = process_document(SCANNED)
    assert isinstance(next(items), DocumentInfo)
    child = current_child(children)
    assert sockets_of(child) == []
    pipes = []
    for fd in Path(f"/proc/{child}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # the child's programs open and close
            if stat.S_ISFIFO(os.stat(fd).st_mode):
                pipes.append(int(fd.name))
    assert {0, 1, 2} <= set(pipes)
    assert os.getsid(child) == child, "the child leads a session of its own"
    limits = Path(f"/proc/{child}/limits").read_text()
    assert "Max core file size        0" in limits
    assert isinstance(items, Generator)
    items.close()
    assert group_members(child) == []


def test_fork_server_is_replaced_after_its_share_of_documents(
    monkeypatch: pytest.MonkeyPatch, children: list[int]
) -> None:
    monkeypatch.setattr(engine, "MAX_DOCUMENTS", 2)
    servers = [read(BORN, children)[1] for _ in range(3)]
    assert servers[0] == servers[1] != servers[2]
    assert not alive(servers[0])


def test_fork_server_exits_when_its_worker_dies() -> None:
    """The worker's end of the control socket closes with it; the server follows."""
    script = (
        "import os, sys\n"
        "from workers import engine\n"
        "list(engine.process_document(sys.argv[1]))\n"
        "print(engine.forkserver_pid(), flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(BORN)], capture_output=True, check=True, timeout=60
    )
    server = int(out.stdout)
    assert wait_until(lambda: not alive(server)), "the fork server outlived its worker"


def test_child_killed_while_its_program_runs_takes_the_program_with_it(
    children: list[int], slow_renderer: None
) -> None:
    """The fork server kills the group before it reaps the child (whose pid names it)."""
    items = process_document(SCANNED)
    assert isinstance(next(items), DocumentInfo)
    child = current_child(children)
    try:
        assert wait_until(lambda: "sleep" in commands(group_members_now(child))), "no render"
        os.kill(child, signal.SIGKILL)
        with pytest.raises(ChildCrashed, match="killed by signal 9"):
            list(items)
        assert group_members(child) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signal.SIGKILL)


SERVER = """import os, sys, tempfile
sys.path.insert(0, {root!r})
from workers import forkserver
from workers.walls import Walls

def target():
    os.write(1, tempfile.gettempdir().encode())
    with open(os.path.join(tempfile.gettempdir(), "page-1.pgm"), "w") as page:
        page.write("P5")
    return 0

walls = Walls(namespaces={walls}, own_user={walls})
sys.exit(forkserver.serve(int(sys.argv[-1]), target, walls=walls))
"""


@pytest.mark.parametrize("walls", [True, False])
def test_each_child_writes_in_a_directory_of_its_own_that_goes_with_it(
    walls: bool, tmp_path: Path
) -> None:
    """With walls the child's own directory is its /tmp; without (a host that allows no
    namespaces) it is named by TMPDIR. Either way it is removed once the child is reaped."""
    if walls and os.geteuid() != 0:
        pytest.skip("namespaces are made as root here")
    script = tmp_path / "server.py"
    script.write_text(SERVER.format(root=str(Path(__file__).parents[1]), walls=walls))
    temporary = tmp_path / "tmp"  # where the server makes the children's directories
    temporary.mkdir()
    environment = {**os.environ, "TMPDIR": str(temporary)}
    server = engine.ForkServer([sys.executable, str(script)], environment)
    reader, writer = os.pipe()
    with open(os.devnull, "rb") as null:
        try:
            pid = server.start_child([null.fileno(), writer, null.fileno()])
            os.close(writer)
            with os.fdopen(reader, "rb") as out:
                seen = out.read().decode()
            assert server.wait(pid, 10) == 0
            left = list(temporary.iterdir())
        finally:
            server.close()
    if walls:
        assert seen == "/tmp"
    else:
        assert Path(seen).parent.parent == temporary
    assert left == [], "the child's directory outlived it"

"""What a document child can reach, seen from inside a real one: a `pdftotext` first on
PATH records what the process that parses the PDF can do, then runs the real one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES, importer
from workers.forkserver import CHILD_PROCESSES

MARKER = "importer-isolation-marker-secret"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="children drop privileges as root")

PROBE = """#!/bin/bash
{{
  echo "uid=$(id -u)"
  echo "files=$(ulimit -n)"
  echo "processes=$(ulimit -u)"
  grep -ls {marker} /proc/[0-9]*/environ >/dev/null && echo "environ=read" || echo "environ=no"
  cat {data}/secret_keys >/dev/null 2>&1 && echo "keys=read" || echo "keys=no"
  cat {data}/importer.db >/dev/null 2>&1 && echo "database=read" || echo "database=no"
  timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5432' 2>/dev/null \\
    && echo "network=connected" || echo "network=no"
  [ -e /proc/{test_pid} ] && echo "test_process=seen" || echo "test_process=no"
  [ -e {canary} ] && echo "other_tmp=seen" || echo "other_tmp=no"
  head -c 5 {other_document} >/dev/null 2>&1 && echo "other_document=read" \\
    || echo "other_document=no"
  /usr/bin/python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect("{socket}")' \\
    2>/dev/null && echo "unix_socket=connected" || echo "unix_socket=no"
  echo "reader_capabilities=$(awk '/^CapEff/ {{print $2}}' /proc/1/status)"
  echo "reader_no_new_privileges=$(awk '/^NoNewPrivs/ {{print $2}}' /proc/1/status)"
  echo "ipc_objects=$(ipcs -m -q -s | awk '$1 ~ /^0x/' | wc -l)"
  unshare -U -r true 2>/dev/null && echo "nested_namespace=made" || echo "nested_namespace=no"
  echo "inotify=$(/usr/bin/python3 -c 'import ctypes; libc = ctypes.CDLL(None)
print(sum(libc.inotify_init1(0) >= 0 for _ in range(20)))')"
  setsid bash -c 'exec -a {escapee} sleep 300' </dev/null >/dev/null 2>&1 &
}} > {out}/probe-$$.txt
exec {real} "$@"
"""

PLANTED = """from pathlib import Path
Path({out!r}, "planted-" + __name__).write_text("imported")
"""


def test_a_document_child_reaches_nothing_but_its_file(
    env: dict[str, str], shared_tmp: Path
) -> None:
    out = shared_tmp / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the child writes here as its own user
    bin_dir = shared_tmp / "bin"
    bin_dir.mkdir()
    probe = bin_dir / "pdftotext"
    real = shutil.which("pdftotext")
    data = Path(env["IMPORTER_DATA_DIR"])
    canary = Path(tempfile.gettempdir(), f"importer-doc-{os.getpid()}")
    socket_path = Path("/run", f"importer-test-{os.getpid()}.sock")
    escapee = f"importer-escapee-{os.getpid()}"
    probe.write_text(
        PROBE.format(
            marker=MARKER, data=data, out=out, real=real, test_pid=os.getpid(),
            canary=canary, socket=socket_path, escapee=escapee,
            other_document=SAMPLES / "scanned_letter.pdf",
        )
    )  # fmt: skip
    probe.chmod(0o755)
    cwd = shared_tmp / "cwd"  # the worker's working directory, with modules planted in it
    cwd.mkdir()
    for name in ("selectors", "json", "tempfile"):
        (cwd / f"{name}.py").write_text(PLANTED.format(out=str(out)))
    env["IMPORTER_SECRET_KEYS"] = f"k1:{MARKER}-0123456789abcdef"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    batch = json.loads(
        importer(
            "submit", str(SAMPLES / "born_digital.pdf"), "--email", "ops@example.com", "--json",
            env=env, check=True,
        ).stdout
    )["batch_id"]  # fmt: skip
    with _neighbours(canary, socket_path):
        worker = subprocess.run(
            [str(Path(sys.executable).parent / "importer"), "worker", "--burst"],
            env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert worker.returncode == 0, worker.stderr

    probes = list(out.glob("probe-*.txt"))
    assert probes, f"the child never ran pdftotext: {worker.stderr[-2000:]}"
    left = subprocess.run(["pgrep", "-f", escapee], capture_output=True, text=True)
    assert left.stdout == "", "a process the child started in a new session outlived it"
    _assert_walled(dict(line.split("=", 1) for line in probes[0].read_text().split()))
    assert not list(out.glob("planted-*")), "a module planted in the worker's cwd ran"
    status = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    assert status["documents"][0]["status"] == "done"  # read through the inherited descriptor
    assert status["documents"][0]["progress"] == [3, 3]


@contextlib.contextmanager
def _neighbours(canary: Path, socket_path: Path) -> Iterator[None]:
    """What else is on the host while the child runs: another document's pages in /tmp,
    a local service's socket in /run open to all, another document's shared memory,
    and every process the child user may have (another document's fork bomb: the
    child must still run its programs, counted apart)."""
    canary.mkdir(mode=0o755)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_path))
    socket_path.chmod(0o777)
    listener.listen()
    drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    segment = subprocess.run(
        [*drop, "ipcmk", "-M", "4096"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    hogs = [subprocess.Popen([*drop, "sleep", "120"]) for _ in range(CHILD_PROCESSES)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        subprocess.run(["ipcrm", "-m", segment], check=True)
        listener.close()
        socket_path.unlink()
        canary.rmdir()


def _assert_walled(seen: dict[str, str]) -> None:
    """What the probe saw from inside the child."""
    assert seen["uid"] != "0"
    assert (seen["files"], seen["processes"]) == ("256", str(CHILD_PROCESSES))
    assert seen["environ"] == "no", "the child read a worker's environment (keys)"
    assert seen["keys"] == "no" and seen["database"] == "no"
    assert seen["network"] == "no", "the child connected to 127.0.0.1:5432"
    assert seen["test_process"] == "no", "the child sees processes beyond its own"
    assert seen["other_tmp"] == "no", "the child sees the host's /tmp"
    assert seen["other_document"] == "no", "the child read another document in the roots"
    assert seen["unix_socket"] == "no", "the child connected to a socket in /run"
    assert seen["ipc_objects"] == "0", "the child sees System V IPC objects of others"
    # no namespaces of its own (they would grant capabilities and use up a quota that
    # every document's user shares), and a few of the user's inotify instances at most
    assert seen["nested_namespace"] == "no", "the child made a user namespace"
    assert int(seen["inotify"]) <= 8, seen["inotify"]
    # process 1 of its namespace is the Python process reading the document
    assert seen["reader_capabilities"] == "0" * 16, "the reader keeps capabilities"
    assert seen["reader_no_new_privileges"] == "1"


def test_a_non_dumpable_process_hides_its_environment_from_its_own_user(
    shared_tmp: Path,
) -> None:
    """What the workers do for themselves, seen from another process of the same user.

    The target starts as root and becomes nobody itself (which makes it non-dumpable, so
    it is made dumpable again, as a worker that never changed user is): nobody need read
    this checkout or its venv, which may lie in a directory of root's alone."""
    script = (
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from workers import isolation\n"
        "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n"
        "isolation._set_dumpable(True)  # as a process that never changed user\n"
        "if sys.argv[1] == 'hide':\n"
        "    isolation.make_non_dumpable()\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(30)\n"
    )
    program = shared_tmp / "target.py"
    program.write_text(script)
    drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    results = {}
    for mode in ("hide", "show"):
        target = subprocess.Popen(
            [sys.executable, "-S", str(program), mode],
            stdout=subprocess.PIPE, text=True, env={"SECRET": MARKER},
        )  # fmt: skip
        try:
            assert target.stdout is not None
            pid = target.stdout.readline().strip()
            reader = subprocess.run(
                [*drop, "cat", f"/proc/{pid}/environ"], capture_output=True, text=True
            )
            results[mode] = MARKER in reader.stdout
        finally:
            target.kill()
            target.wait()
    assert results == {"hide": False, "show": True}


def test_each_worker_slot_gets_its_own_user_when_the_prefix_names_some() -> None:
    from workers.isolation import child_user

    if shutil.which("useradd") is None:
        pytest.skip("no useradd here")
    names = ["importer-test-child0", "importer-test-child1"]
    for name in names:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
    try:
        slot0, slot1 = child_user("importer-test-child", 0), child_user("importer-test-child", 1)
        assert slot0 is not None and slot1 is not None
        assert (slot0.name, slot1.name) == tuple(names) and slot0.uid != slot1.uid
        with pytest.raises(ValueError, match="names no user"):  # none for slot 2, nor the prefix
            child_user("importer-test-child", 2)
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False)
    shared = child_user("nobody", 5)  # no nobody5: one user for every slot
    assert shared is not None and shared.name == "nobody" and shared.uid != 0


def test_a_root_is_hidden_even_when_what_a_document_needs_lies_in_it(tmp_path: Path) -> None:
    """A root that holds the interpreter's environment is hidden all the same, with only
    that environment bound back; a root that holds or lies in the system stays in sight,
    and says why."""
    from workers.walls import hiding

    root = Path(tempfile.mkdtemp(prefix="importer-root-", dir="/var/lib"))
    try:
        venv = root / "app" / ".venv"
        venv.mkdir(parents=True)
        inner = venv / "scans"  # a root inside what is bound back is covered again
        inner.mkdir()
        plan = hiding([root, "/", "/usr/share", inner, tmp_path], needed=[str(venv), "/usr"])
        assert plan.hidden == (str(root), str(inner))
        assert plan.kept == (str(venv),)
        assert plan.covered == (str(tmp_path),)  # under the document's own /tmp
        assert dict(plan.unhidden) == {
            "/": "it holds /usr, which every program needs",
            "/usr/share": "it lies within /usr, which the programs need",
        }
    finally:
        shutil.rmtree(root)


def test_a_document_sees_nothing_of_a_root_that_holds_the_venv_but_the_venv() -> None:
    """Seen from a real walled child: the root's other files are gone, the environment
    bound back is there and read-only, a root inside it is covered again."""
    from workers import isolation
    from workers.walls import _tried

    root = Path(tempfile.mkdtemp(prefix="importer-root-", dir="/var/lib"))
    private = Path(tempfile.mkdtemp(prefix="importer-doc-", dir="/var/lib"))
    try:
        (root / "other-batch.pdf").write_text("another batch's document")
        venv = root / "venv"
        (venv / "scans").mkdir(parents=True)
        (venv / "site.py").write_text("# code")
        (venv / "scans" / "x.pdf").write_text("x")
        (private / "tmp").mkdir()

        def look() -> None:
            isolation.enter_document_namespaces(
                str(private / "tmp"), [str(root), str(venv / "scans")], [str(venv)]
            )
            assert sorted(os.listdir(root)) == ["venv"], os.listdir(root)
            assert (venv / "site.py").read_text() == "# code"
            assert os.listdir(venv / "scans") == []
            try:
                (venv / "planted.py").write_text("x")
            except OSError:
                os._exit(0)  # read-only: the test passes
            os._exit(5)

        assert _tried(look) is None
    finally:
        shutil.rmtree(root)
        shutil.rmtree(private)

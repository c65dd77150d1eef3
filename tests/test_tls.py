"""Mutual TLS in front of gearmand: real stunnel, real gearmand, real pygearman over TLS.

The refusal tests check two things for every kind of unwelcome client: the client gets
no answer, and gearmand itself (asked directly on its private loopback port) never saw
the job, the worker or the admin request.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gearman
import pytest
from gearman.constants import JOB_CREATED
from gearman.errors import GearmanError, ServerUnavailable

from importer import certs
from importer.certs import CertPaths, init_ca_dir
from importer.errors import BadInput, GearmanUnavailable
from importer.gearman.address import free_port, parse_host
from importer.gearman.admin import admin_command
from importer.gearman.stunnel import TlsGearmand, find_stunnel, pygearman_host, stunnel_config
from tests.gearmand_fixture import require_gearmand

ROOT = Path(__file__).resolve().parent.parent

# Binary protocol request types (gearman.org/protocol).
CAN_DO = 1
SUBMIT_JOB_BG = 18
GRAB_JOB_UNIQ = 30


def require_stunnel() -> None:
    require_gearmand()
    try:
        find_stunnel()
    except GearmanUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e.message} (CI is set, so this fails instead of skipping)")
        pytest.skip(e.message)


@dataclass(frozen=True)
class Pki:
    ours: CertPaths
    other: CertPaths  # a second CA: its client certificate must not open our door

    def cert(self, name: str) -> tuple[Path, Path]:
        return self.ours.dir / f"{name}.pem", self.ours.dir / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ours = init_ca_dir(base / "ours")
    other = init_ca_dir(base / "other")
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    certs._issue_client(ours.dir, "expired", not_before=now - 30 * day, not_after=now - day)
    certs._issue_client(ours.dir, "future", not_before=now + day, not_after=now + 30 * day)
    return Pki(ours=ours, other=other)


@pytest.fixture(scope="module")
def server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGearmand]:
    require_stunnel()
    started = time.monotonic()
    with TlsGearmand(certs_dir=pki.ours.dir, data_dir=tmp_path_factory.mktemp("data")) as srv:
        logging.getLogger(__name__).info(
            "gearmand + stunnel ready in %.3f s", time.monotonic() - started
        )
        yield srv


def eventually(check: Callable[[], bool], seconds: float = 3) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def unique_function() -> bytes:
    return f"tls-test-{uuid.uuid4().hex[:12]}".encode()


# What gearmand itself saw, asked on its private plain-text port ---------------------------


def backend_admin(server: TlsGearmand) -> gearman.GearmanAdminClient:
    assert server.backend is not None
    return gearman.GearmanAdminClient([("127.0.0.1", server.backend.port)], poll_timeout=5)


def backend_queued(server: TlsGearmand, function: bytes) -> int | None:
    """Jobs queued for `function`, or None when gearmand has never heard of it."""
    for row in backend_admin(server).get_status():
        if row["task"] == function.decode():
            return int(row["queued"])
    return None


def backend_workers_for(server: TlsGearmand, function: bytes) -> int:
    rows = backend_admin(server).get_workers()
    return sum(1 for row in rows if function.decode() in row["tasks"])


# Clients ----------------------------------------------------------------------------


def pack(command: int, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return b"\0REQ" + struct.pack(">II", command, len(body)) + body


def dial(server: TlsGearmand, pki: Pki, kind: str) -> socket.socket:
    """A connection to stunnel as each kind of client would make it."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    if kind == "plain":
        return raw
    context = ssl.create_default_context(cafile=str(pki.ours.ca_cert))
    if kind == "another CA":
        context.load_cert_chain(str(pki.other.client_cert), str(pki.other.client_key))
    elif kind == "expired":
        context.load_cert_chain(*map(str, pki.cert("expired")))
    elif kind == "not yet valid":
        context.load_cert_chain(*map(str, pki.cert("future")))
    return context.wrap_socket(raw, server_hostname="localhost")


def exchange(server: TlsGearmand, pki: Pki, kind: str, request: bytes) -> bytes | OSError:
    """Send one request; return the answer, or the error that ended the connection."""
    try:
        with dial(server, pki, kind) as conn:
            conn.sendall(request)
            return conn.recv(4096)
    except OSError as e:
        return e


def pygearman_entry(server: TlsGearmand, pki: Pki, kind: str) -> Any:
    if kind == "plain":
        return ("127.0.0.1", server.port)
    if kind == "another CA":
        return {
            "host": "127.0.0.1",
            "port": server.port,
            "keyfile": str(pki.other.client_key),
            "certfile": str(pki.other.client_cert),
            "ca_certs": str(pki.ours.ca_cert),
        }
    name = {"expired": "expired", "not yet valid": "future"}[kind]
    return pygearman_host("127.0.0.1", server.port, pki.ours.dir, name)


class OneJobWorker(gearman.GearmanWorker):
    """Stops after its first job, or after `seconds`, so a test can never hang on it."""

    def __init__(self, host_list: list[Any], seconds: float) -> None:
        super().__init__(host_list)
        self.jobs: list[tuple[bytes, bytes]] = []
        self.deadline = time.monotonic() + seconds

    def take(self, function: bytes) -> None:
        def record(worker: gearman.GearmanWorker, job: Any) -> bytes:
            self.jobs.append((job.data, job.unique))
            return b"done"

        self.register_task(function, record)
        self.work(poll_timeout=0.2)

    def after_poll(self, any_activity: bool) -> bool:
        # Stopping before WORK_COMPLETE is written would make gearmand requeue the job.
        unsent = any(conn.writable() for conn in self.connection_list)
        return (not self.jobs or unsent) and time.monotonic() < self.deadline


# The way in -------------------------------------------------------------------------


def test_client_certificate_submits_reads_status_and_works(server: TlsGearmand) -> None:
    function = unique_function()
    client = gearman.GearmanClient([server.host_entry()])
    request = client.submit_job(
        function, b"payload-1", unique="doc-1", background=True, wait_until_complete=False
    )
    assert request.state == JOB_CREATED

    status = gearman.GearmanAdminClient([server.host_entry()], poll_timeout=5).get_status()
    row = next(r for r in status if r["task"] == function.decode())
    assert (row["queued"], row["workers"]) == (1, 0)

    worker = OneJobWorker([server.host_entry()], seconds=10)
    worker.take(function)
    assert worker.jobs == [(b"payload-1", b"doc-1")]
    # WORK_COMPLETE still travels through stunnel when the worker returns.
    eventually(lambda: backend_queued(server, function) == 0)
    client.shutdown()
    worker.shutdown()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_server_certificate_names_the_local_host(server: TlsGearmand, host: str) -> None:
    """pygearman checks the server's name, so both ways of dialling this machine must work."""
    entry = pygearman_host(host, server.port, server.certs.dir)
    assert gearman.GearmanAdminClient([entry], poll_timeout=5).get_version().startswith("OK ")


def test_a_name_the_certificate_lacks_is_rejected_by_the_client(
    server: TlsGearmand, pki: Pki
) -> None:
    context = ssl.create_default_context(cafile=str(pki.ours.ca_cert))
    context.load_cert_chain(str(pki.ours.client_cert), str(pki.ours.client_key))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
    ):
        context.wrap_socket(raw, server_hostname="gearman.invalid")


# Everyone else ----------------------------------------------------------------------

KINDS = ["plain", "no client certificate", "another CA", "expired", "not yet valid"]
ALERTS = {
    "no client certificate": "CERTIFICATE_REQUIRED",
    "another CA": "UNKNOWN_CA",
    "expired": "CERTIFICATE_EXPIRED",
    "not yet valid": "BAD_CERTIFICATE",
}


def assert_refused(kind: str, answer: bytes | OSError) -> None:
    """No answer: an error, or the connection closed.

    Which error varies: the request may still sit unread when stunnel closes, and then
    the kernel resets the connection before the client reads the TLS alert.
    """
    assert not isinstance(answer, bytes) or answer == b"", f"{kind} got an answer: {answer!r}"


@pytest.mark.parametrize("kind", sorted(ALERTS))
def test_refusal_says_why(server: TlsGearmand, pki: Pki, kind: str) -> None:
    """With nothing sent first, the client reliably reads stunnel's alert."""
    with pytest.raises(ssl.SSLError) as info, dial(server, pki, kind) as conn:
        conn.recv(4096)
    assert ALERTS[kind] in str(info.value.reason)


@pytest.mark.parametrize("kind", KINDS)
def test_refused_submit(server: TlsGearmand, pki: Pki, kind: str) -> None:
    function = unique_function()
    answer = exchange(server, pki, kind, pack(SUBMIT_JOB_BG, function, b"u-1", b"evil"))
    assert_refused(kind, answer)
    assert backend_queued(server, function) is None


@pytest.mark.parametrize("kind", KINDS)
def test_refused_admin_status(server: TlsGearmand, pki: Pki, kind: str) -> None:
    known = unique_function()  # something the status list would reveal
    gearman.GearmanClient([server.host_entry()]).submit_job(
        known, b"x", background=True, wait_until_complete=False
    )
    assert_refused(kind, exchange(server, pki, kind, b"status\n"))


@pytest.mark.parametrize("kind", KINDS)
def test_refused_worker_registration(server: TlsGearmand, pki: Pki, kind: str) -> None:
    function = unique_function()
    gearman.GearmanClient([server.host_entry()]).submit_job(
        function, b"to steal", background=True, wait_until_complete=False
    )
    answer = exchange(server, pki, kind, pack(CAN_DO, function) + pack(GRAB_JOB_UNIQ))
    assert_refused(kind, answer)
    assert backend_workers_for(server, function) == 0
    assert backend_queued(server, function) == 1


PYGEARMAN_KINDS = ["plain", "another CA", "expired", "not yet valid"]  # it needs all 3 files


@pytest.mark.parametrize("kind", PYGEARMAN_KINDS)
def test_pygearman_refused_for_submit_status_and_work(
    server: TlsGearmand, pki: Pki, kind: str
) -> None:
    entry = pygearman_entry(server, pki, kind)
    function = unique_function()

    with pytest.raises(GearmanError):
        gearman.GearmanClient([entry]).submit_job(
            function, b"evil", background=True, wait_until_complete=False, poll_timeout=5
        )
    assert backend_queued(server, function) is None

    with pytest.raises(ServerUnavailable):
        gearman.GearmanAdminClient([entry], poll_timeout=5).get_status()

    gearman.GearmanClient([server.host_entry()]).submit_job(
        function, b"to steal", background=True, wait_until_complete=False
    )
    worker = OneJobWorker([entry], seconds=3)
    with pytest.raises(ServerUnavailable):
        worker.take(function)
    assert worker.jobs == []
    assert backend_queued(server, function) == 1


def test_refusals_reach_our_log(
    server: TlsGearmand, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="importer.tools.stunnel")
    exchange(server, pki, "expired", b"status\n")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if any("certificate has expired" in r.getMessage() for r in caplog.records):
            return
        time.sleep(0.05)
    pytest.fail("stunnel's refusal of an expired certificate did not reach importer's log")


# Start-up errors that name the fix ---------------------------------------------------


def test_missing_stunnel_names_the_package(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GearmanUnavailable, match="apt-get install stunnel4"):
        TlsGearmand(certs_dir=pki.ours.dir, data_dir=tmp_path).start()


def test_incomplete_certs_dir_names_the_command(tmp_path: Path) -> None:
    require_stunnel()
    with pytest.raises(GearmanUnavailable, match="importer certs init") as info:
        TlsGearmand(certs_dir=tmp_path / "empty", data_dir=tmp_path / "data").start()
    assert "ca.pem" in info.value.message

    paths = init_ca_dir(tmp_path / "tls")
    paths.server_key.unlink()
    with pytest.raises(GearmanUnavailable, match="lacks server.key"):
        TlsGearmand(certs_dir=paths.dir, data_dir=tmp_path / "data").start()


def test_own_expired_client_certificate_fails_fast(tmp_path: Path, pki: Pki) -> None:
    require_stunnel()
    copy = Path(shutil.copytree(pki.ours.dir, tmp_path / "tls"))
    shutil.copy(copy / "expired.pem", copy / "client.pem")
    shutil.copy(copy / "expired.key", copy / "client.key")
    server = TlsGearmand(certs_dir=copy, data_dir=tmp_path / "data")
    server.start()
    started = time.monotonic()
    with pytest.raises(GearmanUnavailable, match="stunnel refused .*client.pem"):
        server.wait_ready()
    assert time.monotonic() - started < 3
    assert server.stunnel is None and server.backend is None


def test_listen_address_missing_from_the_certificate_says_which_host(
    tmp_path: Path, pki: Pki
) -> None:
    require_stunnel()
    server = TlsGearmand(certs_dir=pki.ours.dir, data_dir=tmp_path, listen="127.0.0.2")
    server.start()
    with pytest.raises(GearmanUnavailable, match="--host 127.0.0.2"):
        server.wait_ready()
    assert server.stunnel is None


def test_stunnel_config_demands_a_certificate_from_our_ca(tmp_path: Path) -> None:
    text = stunnel_config(
        accept_host="0.0.0.0",
        accept_port=4730,
        backend_port=40001,
        certs_dir=tmp_path,
        pid_file=tmp_path / "pid",
        log_file=tmp_path / "log",
    )
    lines = {
        line.partition("=")[0].strip(): line.partition("=")[2].strip() for line in text.splitlines()
    }
    assert lines["client"] == "no"
    assert lines["accept"] == "0.0.0.0:4730"
    assert lines["connect"] == "127.0.0.1:40001"
    assert lines["cert"] == str(tmp_path.resolve() / "server.pem")
    assert lines["key"] == str(tmp_path.resolve() / "server.key")
    assert lines["CAfile"] == str(tmp_path.resolve() / "ca.pem")
    assert lines["verifyChain"] == lines["requireCert"] == "yes"
    assert lines["sslVersionMin"] == "TLSv1.2"
    assert lines["foreground"] == "yes"


def test_stunnel_config_refuses_values_that_would_add_options(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot go into stunnel"):
        stunnel_config(
            accept_host="127.0.0.1",
            accept_port=4730,
            backend_port=40001,
            certs_dir=tmp_path / "x\nverifyChain = no",
            pid_file=tmp_path / "pid",
            log_file=tmp_path / "log",
        )


# `importer gearmand --tls` in the foreground -----------------------------------------

FOREGROUND = (
    "import logging, sys; from pathlib import Path; from importer.config import Settings; "
    "from importer.gearman.foreground import run_tls_foreground; "
    "logging.basicConfig(level=logging.INFO); "
    "sys.exit(run_tls_foreground(Settings(data_dir=Path(sys.argv[1])), Path(sys.argv[2]), "
    "'127.0.0.1', int(sys.argv[3])))"
)


class Foreground:
    """`run_tls_foreground` in a child process, as `importer gearmand --tls` runs it."""

    def __init__(self, data_dir: Path, certs_dir: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
        argv = [sys.executable, "-c", FOREGROUND, str(data_dir), str(certs_dir), str(self.port)]
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, f"no {text!r} in:\n{''.join(self.lines)}"
            time.sleep(0.05)

    def wait(self, timeout: float = 15) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def output(self) -> str:
        self.wait()
        return "".join(self.lines)

    def children(self) -> dict[str, int]:
        text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return {command_name(int(pid)): int(pid) for pid in text.split()}


def command_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


@pytest.fixture
def foreground(tmp_path: Path, pki: Pki) -> Iterator[Foreground]:
    require_stunnel()
    run = Foreground(tmp_path / "data", pki.ours.dir)
    try:
        run.wait_for("listening on")
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.wait()


def test_foreground_stops_both_on_sigterm(foreground: Foreground, pki: Pki) -> None:
    client = parse_host(pygearman_host("127.0.0.1", foreground.port, pki.ours.dir))
    assert admin_command(client, "version", timeout=5.0)[0].startswith("1.")
    kids = foreground.children()
    assert sorted(kids) == ["gearmand", "stunnel4"]
    foreground.proc.send_signal(signal.SIGTERM)
    assert foreground.wait() == 0, foreground.output()
    assert "SIGTERM" in foreground.output()
    for name, pid in kids.items():
        assert not Path(f"/proc/{pid}").exists(), f"{name} outlived us"


def test_foreground_stops_stunnel_when_gearmand_dies(foreground: Foreground) -> None:
    kids = foreground.children()
    os.kill(kids["gearmand"], signal.SIGKILL)
    assert foreground.wait() == 3, foreground.output()
    assert "gearmand (exit status -9) stopped" in foreground.output()
    assert not Path(f"/proc/{kids['stunnel4']}").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", foreground.port), timeout=1).close()

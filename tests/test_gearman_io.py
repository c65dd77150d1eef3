"""The Gearman adapter and gearmand runner against real gearmand processes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gearman
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from importer.errors import GearmanUnavailable
from importer.gearman.address import free_port
from importer.gearman.client import GearmanIO, JobSpec, SubmitIncomplete, UniqueStatus
from importer.gearman.server import GearmandProcess, gearmand_argv
from importer.states import Priority
from tests.gearmand_fixture import require_gearmand

Factory = Callable[..., GearmandProcess]


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll until `check` returns something truthy; gearmand updates arrive asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


class _Worker(gearman.GearmanWorker):
    def __init__(self, hosts: list[str], stop: threading.Event) -> None:
        super().__init__(hosts)
        self.stop = stop

    def after_poll(self, any_activity: bool) -> bool:
        return not self.stop.is_set()


@contextmanager
def worker_thread(address: str, handler: Callable[[Any, Any], bytes]) -> Iterator[None]:
    """A pygearman worker for `import` jobs in a thread, stopped when the block ends."""
    stop = threading.Event()
    worker = _Worker([address], stop)
    worker.register_task(b"import", handler)
    thread = threading.Thread(target=worker.work, kwargs={"poll_timeout": 0.1}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_submit_with_priorities_returns_handles_and_workers_see_priority_order(
    gearmand: GearmandProcess,
) -> None:
    jobs = [
        JobSpec("job-low", b"l", Priority.low),
        JobSpec("job-normal", b"n", Priority.normal),
        JobSpec("job-high", b"h", Priority.high),
    ]
    with GearmanIO([gearmand.address]) as gio:
        handles = gio.submit_background(jobs)
        assert set(handles) == {"job-low", "job-normal", "job-high"}
        assert all(handle.startswith("H:") for handle in handles.values())
        assert len(set(handles.values())) == 3
        assert gio.admin_status()["import"].queued == 3

        seen: list[str] = []

        def record(worker: Any, job: Any) -> bytes:
            seen.append(job.unique.decode())
            return b""

        with worker_thread(gearmand.address, record):
            assert eventually(lambda: len(seen) == 3)
        assert seen == ["job-high", "job-normal", "job-low"]


def test_resubmitting_a_queued_unique_joins_the_queued_job(gearmand: GearmandProcess) -> None:
    with GearmanIO([gearmand.address]) as gio:
        first = gio.submit_background([JobSpec("same", b"1")])
        again = gio.submit_background([JobSpec("same", b"2")])
        assert first == again
        assert gio.admin_status()["import"].queued == 1


def test_status_by_unique_queued_running_with_progress_and_unknown(
    gearmand: GearmandProcess,
) -> None:
    release = threading.Event()

    def slow(worker: Any, job: Any) -> bytes:
        worker.send_job_status(job, 3, 7)
        release.wait(10)
        return b"done"

    with GearmanIO([gearmand.address]) as gio, worker_thread(gearmand.address, slow):
        gio.submit_background([JobSpec("running-1", b"r")])

        def progressed() -> UniqueStatus | None:
            status = gio.status_by_unique(["running-1"])["running-1"]
            return status if status.numerator else None

        running = eventually(progressed)
        assert running == UniqueStatus("running-1", True, True, 3, 7, 0)

        gio.submit_background([JobSpec("queued-1", b"q")])  # the only worker is busy
        statuses = gio.status_by_unique(["queued-1", "never-submitted"])
        assert statuses["queued-1"] == UniqueStatus("queued-1", True, False, 0, 0, 0)
        assert statuses["never-submitted"] == UniqueStatus("never-submitted", False, False, 0, 0, 0)

        release.set()
        # A finished background job is forgotten by gearmand.
        assert eventually(lambda: not gio.status_by_unique(["running-1"])["running-1"].known)


def test_status_by_unique_asks_every_server(gearmand_factory: Factory) -> None:
    one, two = gearmand_factory(), gearmand_factory()
    with GearmanIO([one.address]) as gio:
        gio.submit_background([JobSpec("on-one", b"1")])
    with GearmanIO([two.address]) as gio:
        gio.submit_background([JobSpec("on-two", b"2")])
    with GearmanIO([one.address, two.address]) as gio:
        statuses = gio.status_by_unique(["on-one", "on-two", "on-neither"])
        assert statuses["on-one"].known and statuses["on-two"].known
        assert not statuses["on-neither"].known
        assert gio.admin_status()["import"].queued == 2
        assert [h.reachable for h in gio.ping()] == [True, True]


def test_dead_server_is_skipped_and_all_dead_is_unavailable(gearmand: GearmandProcess) -> None:
    dead = f"127.0.0.1:{free_port()}"
    jobs = [JobSpec(f"job-{i:05d}", b"x" * 100) for i in range(1200)]  # three groups
    with GearmanIO([dead, gearmand.address]) as gio:
        handles = gio.submit_background(jobs)
        assert len(handles) == 1200
        assert gio.admin_status()["import"].queued == 1200
        assert all(s.known for s in gio.status_by_unique(handles).values())
        health = {h.address: h for h in gio.ping()}
        assert not health[dead].reachable and health[dead].error
        assert health[gearmand.address].version == "1.1.20+ds"

    with GearmanIO([dead], timeout=2.0) as gio:
        with pytest.raises(SubmitIncomplete) as raised:
            gio.submit_background(jobs[:3])
        assert dead in raised.value.message
        assert "3 of 3 jobs" in raised.value.message
        assert raised.value.accepted == {}
        assert raised.value.rejected == ["job-00000", "job-00001", "job-00002"]
        with pytest.raises(GearmanUnavailable, match=dead):
            gio.status_by_unique(["job-00000"])
        with pytest.raises(GearmanUnavailable, match=dead):
            gio.admin_status()


def test_queue_survives_sigkill_and_restart(gearmand: GearmandProcess) -> None:
    jobs = [JobSpec(f"keep-{i}", b"payload", Priority.low) for i in range(50)]
    with GearmanIO([gearmand.address]) as gio:
        gio.submit_background(jobs)
        gearmand.kill()
        gearmand.restart()
        # The same GearmanIO reconnects after the restart.
        assert gio.admin_status()["import"].queued == 50
        assert all(s.known for s in gio.status_by_unique(j.unique for j in jobs).values())


def _packet(command: int, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return b"\0REQ" + struct.pack("!II", command, len(body)) + body


def _grab_and_disconnect(port: int) -> bool:
    """Act as a worker that dies holding the job: CAN_DO, GRAB_JOB_UNIQ, then close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_packet(1, b"import") + _packet(30))
        header = b""
        while len(header) < 12:
            header += sock.recv(12 - len(header))
        _, command, _ = struct.unpack("!4sII", header)
    return command == 31  # JOB_ASSIGN_UNIQ (10 would be NO_JOB)


def test_worker_disconnect_requeues_at_most_job_retries_times(gearmand_factory: Factory) -> None:
    server = gearmand_factory(job_retries=2)
    with GearmanIO([server.address]) as gio:
        gio.submit_background([JobSpec("poison", b"kills its worker")])

        def poison() -> UniqueStatus:
            return gio.status_by_unique(["poison"])["poison"]

        assigned = 0
        while assigned < 5 and poison().known:
            assert _grab_and_disconnect(server.port)
            assigned += 1
            # gearmand notices the disconnect on its own I/O thread: wait for the requeue.
            assert eventually(lambda: not poison().running)
        assert assigned == 2
        assert not _grab_and_disconnect(server.port)  # dropped, not queued


def test_gearmand_argv_is_foreground_loopback_with_explicit_retries(tmp_path: Path) -> None:
    argv = gearmand_argv(listen="127.0.0.1", port=4730, data_dir=tmp_path, job_retries=3)
    assert argv[argv.index("--listen") + 1] == "127.0.0.1"
    assert argv[argv.index("--job-retries") + 1] == "3"
    assert argv[argv.index("-q") + 1] == "libsqlite3"
    assert f"--libsqlite3-db={tmp_path.resolve() / 'gearmand-queue.sqlite'}" in argv
    assert str(tmp_path.resolve() / "gearmand.log") in argv
    assert "-d" not in argv and "--daemon" not in argv
    # It keeps jobs in memory until a clean shutdown: a SIGKILL would lose the queue.
    assert "--store-queue-on-shutdown" not in argv
    with pytest.raises(ValueError, match="unlimited"):
        gearmand_argv(listen="127.0.0.1", port=4730, data_dir=tmp_path, job_retries=0)

    process = GearmandProcess(data_dir=tmp_path)
    assert process.listen == "127.0.0.1"
    assert process.address == f"127.0.0.1:{process.port}"


def test_gearmand_start_failures_say_what_to_do(tmp_path: Path) -> None:
    missing = GearmandProcess(data_dir=tmp_path / "a", binary=str(tmp_path / "no-gearmand"))
    with pytest.raises(GearmanUnavailable, match="apt-get install gearman-job-server"):
        missing.start()

    crashing = tmp_path / "crashing-gearmand"
    crashing.write_text("#!/bin/sh\necho 'cannot open the queue' >&2\nexit 3\n")
    crashing.chmod(0o755)
    with pytest.raises(GearmanUnavailable, match="exit code 3") as raised:
        GearmandProcess(data_dir=tmp_path / "b", binary=str(crashing)).start()
    assert "cannot open the queue" in raised.value.message

    require_gearmand()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(GearmanUnavailable, match="in use"):
            GearmandProcess(data_dir=tmp_path / "c", port=port).start()


def test_job_spec_rejects_uniques_gearmand_cannot_report() -> None:
    JobSpec("u" * 63, b"")
    for bad in ("", "u" * 64, "a\0b"):
        with pytest.raises(ValueError):
            JobSpec(bad, b"")


def _issue_certs(directory: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (EC P-256)."""
    now = dt.datetime.now(dt.UTC)

    def issue(
        name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, **ext: Any
    ) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name, issuer_key = issuer or (subject, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
            )
        )
        if issuer is None:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
        if "san" in ext:
            builder = builder.add_extension(x509.SubjectAlternativeName(ext["san"]), False)
        if "usage" in ext:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ext["usage"]]), False)
        cert = builder.sign(issuer_key, hashes.SHA256())
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return subject, key

    ca = issue("ca", None)
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    issue("server", ca, san=san, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    issue("client", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return {name: str(directory / name) for name in ("ca.pem", "server.pem", "server.key")}


def test_tls_through_stunnel_submits_and_reads_status(
    gearmand: GearmandProcess, tmp_path: Path
) -> None:
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    if stunnel is None:
        reason = "stunnel4 is not installed: apt-get install stunnel4"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    files = _issue_certs(tmp_path)
    port = free_port()
    config = tmp_path / "stunnel.conf"
    config.write_text(
        "foreground = yes\n"
        f"output = {tmp_path / 'stunnel.log'}\n"
        "[gearman]\n"
        f"accept = 127.0.0.1:{port}\n"
        f"connect = {gearmand.address}\n"
        f"cert = {files['server.pem']}\nkey = {files['server.key']}\n"
        f"CAfile = {files['ca.pem']}\n"
        "verifyChain = yes\nrequireCert = yes\n"
    )
    proc = subprocess.Popen([stunnel, str(config)], stdin=subprocess.DEVNULL)
    try:
        host = {
            "host": "127.0.0.1",
            "port": port,
            "keyfile": str(tmp_path / "client.key"),
            "certfile": str(tmp_path / "client.pem"),
            "ca_certs": files["ca.pem"],
        }
        with GearmanIO([host], timeout=3.0) as gio:
            assert eventually(lambda: gio.ping()[0].reachable)
            handles = gio.submit_background([JobSpec("over-tls", b"x", Priority.high)])
            assert handles["over-tls"].startswith("H:")
            assert gio.status_by_unique(["over-tls"])["over-tls"].known
        without_certificate = {**host, "keyfile": None, "certfile": None, "ca_certs": None}
        with GearmanIO([without_certificate], timeout=3.0) as gio:
            health = gio.ping()[0]
            assert not health.reachable, health
            with pytest.raises(SubmitIncomplete):
                gio.submit_background([JobSpec("plain", b"x")])
    finally:
        proc.terminate()
        proc.wait(5)


def test_server_that_never_answers_is_skipped_after_the_timeout(
    gearmand: GearmandProcess, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hung = f"127.0.0.1:{silent.getsockname()[1]}"
        jobs = [JobSpec(f"job-{i}", b"x") for i in range(1500)]  # three groups
        with GearmanIO([hung, gearmand.address], timeout=0.5) as gio:
            assert len(gio.submit_background(jobs)) == 1500
            assert gio.status_by_unique(["job-0"])["job-0"].known
    timeouts = [r for r in caplog.records if "did not take jobs: timed out" in r.getMessage()]
    assert len(timeouts) == 1  # tried once, not once per group


def test_run_foreground_forwards_sigterm_and_returns_the_exit_code(tmp_path: Path) -> None:
    require_gearmand()
    port = free_port()
    script = (
        "import logging, sys\n"
        "from importer.config import Settings\n"
        "from importer.gearman.foreground import run_foreground\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"sys.exit(run_foreground(Settings(data_dir={str(tmp_path)!r}), '127.0.0.1', {port}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        with GearmanIO([f"127.0.0.1:{port}"], timeout=1.0) as gio:
            assert eventually(lambda: gio.ping()[0].reachable)
            gio.submit_background([JobSpec("kept", b"x")])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    _, stderr = proc.communicate()
    assert b"--job-retries 3" in stderr
    assert (tmp_path / "gearmand-queue.sqlite").exists()
    with GearmanIO([f"127.0.0.1:{port}"], timeout=1.0) as gio:
        assert not gio.ping()[0].reachable  # gearmand stopped with us

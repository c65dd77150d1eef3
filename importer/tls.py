"""Mutual TLS in front of gearmand, with stunnel.

Debian's gearmand 1.1.20 accepts `--ssl` yet speaks plain text, and even TLS builds never
verify client certificates. So gearmand listens on a private loopback port, and stunnel
(`verifyChain = yes`, `requireCert = yes`) is the only thing on the public address: a
connection that does not present a certificate from our CA never reaches gearmand, not
for submitting, not for registering a worker, not for the admin protocol.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from importer.certs import CertPaths
from importer.config import Settings
from importer.errors import BadInput, ExitCode, GearmanUnavailable
from importer.gearmand import GearmandProcess, free_port, port_in_use

log = logging.getLogger(__name__)
stunnel_log = logging.getLogger("importer.tools.stunnel")

STUNNEL_NAMES = ("stunnel4", "stunnel")
BACKEND_HOST = "127.0.0.1"
_STOP_TIMEOUT = 5.0
_PROBE_INTERVAL = 0.01  # stunnel is up in tens of milliseconds; do not add a sleep to that
_LOG_LEVEL = re.compile(r"LOG(\d)\[")


def stunnel_config(
    *,
    accept_host: str,
    accept_port: int,
    backend_port: int,
    certs_dir: Path,
    pid_file: Path,
    log_file: Path,
) -> str:
    """stunnel's configuration: TLS server on ADDR:PORT that demands a certificate from our CA.

    `foreground = yes` keeps stunnel our child, so its death is seen and it dies with us.
    `sessionResume = no` stops the TLS 1.3 session tickets that the server sends after the
    handshake: pygearman 0.2.6 retries `recv` in a tight loop on SSL_ERROR_WANT_READ, so a
    ticket arriving at an idle worker kept it spinning inside `work()` until the next job.
    Gearman connections are long-lived, so resumption saves nothing worth that.
    """
    paths = CertPaths(Path(certs_dir).resolve())
    values = {
        "accept_host": accept_host.strip("[]"),
        "pid_file": str(pid_file),
        "log_file": str(log_file),
        "cert": str(paths.server_cert),
        "key": str(paths.server_key),
        "ca": str(paths.ca_cert),
    }
    for name, value in values.items():
        # One value per line is all stunnel's parser knows: a newline would add options.
        if not value or any(ch in value for ch in "\r\n\0") or value != value.strip():
            raise BadInput(f"{name} {value!r} cannot go into stunnel's configuration")
    for port in (accept_port, backend_port):
        if not 0 < port < 65536:
            raise BadInput(f"port {port} is not between 1 and 65535")
    return "\n".join(
        [
            "; written by importer.tls; regenerated on every start",
            "foreground = yes",
            f"pid = {values['pid_file']}",
            f"output = {values['log_file']}",
            "syslog = no",
            "debug = notice",
            "",
            "[gearman]",
            "client = no",
            f"accept = {values['accept_host']}:{accept_port}",
            f"connect = {BACKEND_HOST}:{backend_port}",
            f"cert = {values['cert']}",
            f"key = {values['key']}",
            f"CAfile = {values['ca']}",
            "verifyChain = yes",
            "requireCert = yes",
            "sslVersionMin = TLSv1.2",
            "TIMEOUTclose = 0",
            "sessionResume = no",
            "",
        ]
    )


def pygearman_host(host: str, port: int, certs_dir: Path, name: str = "client") -> dict[str, Any]:
    """A pygearman host entry that dials `host:port` with NAME.pem / NAME.key from `certs_dir`."""
    paths = CertPaths(Path(certs_dir))
    return {
        "host": host,
        "port": port,
        "keyfile": str(paths.dir / f"{name}.key"),
        "certfile": str(paths.dir / f"{name}.pem"),
        "ca_certs": str(paths.ca_cert),
    }


def find_stunnel() -> str:
    """The stunnel binary, or an error that says how to install it."""
    for name in STUNNEL_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise GearmanUnavailable(
        "stunnel4 is not installed, and gearmand cannot check client certificates itself: "
        "install it with `apt-get install stunnel4`"
    )


def check_certs_dir(certs_dir: Path) -> CertPaths:
    """Fail before starting anything when a file that stunnel or the probe reads is missing."""
    paths = CertPaths(Path(certs_dir))
    needed = [paths.ca_cert, paths.server_cert, paths.server_key, paths.client_cert]
    needed.append(paths.client_key)
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise GearmanUnavailable(
            f"{paths.dir} lacks {', '.join(missing)}: "
            f"create the certificates with `importer certs init {paths.dir}`"
        )
    mode = paths.server_key.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o): chmod 600 it", paths.server_key, mode)
    return paths


class TlsGearmand:
    """gearmand on a private loopback port with stunnel on `listen:port` in front of it.

    Use as a context manager, or call start(), wait_ready() and stop().
    """

    def __init__(
        self,
        *,
        certs_dir: Path,
        data_dir: Path,
        listen: str = "127.0.0.1",
        port: int | None = None,
        job_retries: int = 3,
    ) -> None:
        self.certs = CertPaths(Path(certs_dir).resolve())
        self.data_dir = Path(data_dir)
        self.listen = listen
        if port is not None and not 0 < port < 65536:
            raise BadInput(f"--port {port} is not between 1 and 65535")
        self.port = port if port is not None else free_port(listen)
        self.job_retries = job_retries
        self.backend: GearmandProcess | None = None
        self.stunnel: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None
        self._log_pump: threading.Thread | None = None

    @property
    def address(self) -> str:
        """Where clients connect (with TLS and a client certificate), as host:port."""
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"{host}:{self.port}"

    @property
    def dial_host(self) -> str:
        """The name a local client dials: a wildcard address is not a host to connect to."""
        if self.listen.strip("[]") in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return self.listen.strip("[]")

    @property
    def log_file(self) -> Path | None:
        return self._run_dir / "stunnel.log" if self._run_dir else None

    def host_entry(self, name: str = "client") -> dict[str, Any]:
        """pygearman's host dict for this server, with NAME.pem from the certs dir."""
        return pygearman_host(self.dial_host, self.port, self.certs.dir, name)

    def start(self) -> None:
        """Start gearmand, then stunnel; nothing is left running if either fails."""
        stunnel = find_stunnel()
        check_certs_dir(self.certs.dir)
        if port_in_use(self.listen, self.port):
            raise GearmanUnavailable(
                f"cannot listen on {self.address}: the port is in use (another gearmand or "
                "stunnel?); stop that process or choose another port with --port"
            )
        self.backend = GearmandProcess(
            data_dir=self.data_dir,
            listen=BACKEND_HOST,
            port=free_port(BACKEND_HOST),
            job_retries=self.job_retries,
        )
        try:
            self.backend.start()
            self._run_dir = Path(tempfile.mkdtemp(prefix="stunnel-", dir=self.data_dir))
            config = self._run_dir / "stunnel.conf"
            config.write_text(
                stunnel_config(
                    accept_host=self.listen,
                    accept_port=self.port,
                    backend_port=self.backend.port,
                    certs_dir=self.certs.dir,
                    pid_file=self._run_dir / "stunnel.pid",
                    log_file=self._run_dir / "stunnel.log",
                )
            )
            argv = [stunnel, str(config)]
            log.info("starting stunnel: %s", " ".join(argv))
            self.stunnel = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C reaches us, and we stop both in order
            )
            self._log_pump = threading.Thread(
                target=_pump_log, args=(self.stunnel.stderr,), name="stunnel-log", daemon=True
            )
            self._log_pump.start()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until a TLS client with our certificate gets an answer from gearmand."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                version = tls_admin_command(
                    self.dial_host, self.port, self.certs, "version", timeout=2.0
                )
            except ssl.SSLCertVerificationError as e:
                self.stop()
                raise GearmanUnavailable(
                    f"the server certificate in {self.certs.dir} does not fit {self.dial_host} "
                    f"({e.verify_message}), so no client could connect: recreate it with "
                    f"`importer certs init {self.certs.dir} --host {self.dial_host} --force`"
                ) from e
            except ssl.SSLError as e:
                if "ALERT" not in (e.reason or ""):
                    last = e
                    time.sleep(_PROBE_INTERVAL)
                    continue
                self.stop()
                raise GearmanUnavailable(
                    f"stunnel refused {self.certs.client_cert} ({e.reason}): delete client.pem "
                    f"and client.key, then `importer certs client {self.certs.dir} client`"
                ) from e
            except OSError as e:  # stunnel may still be starting
                last = e
                time.sleep(_PROBE_INTERVAL)
                continue
            log.info(
                "gearmand %s behind mutual TLS on %s", version.removeprefix("OK "), self.address
            )
            return
        self.stop()
        raise GearmanUnavailable(
            f"stunnel on {self.address} did not answer within {timeout:.0f} s "
            f"({last}); see {self.log_file}"
        )

    def dead(self) -> str | None:
        """Which of the two processes has exited, if any."""
        if self.stunnel is not None and self.stunnel.poll() is not None:
            return f"stunnel (exit status {self.stunnel.returncode})"
        backend = self.backend.process if self.backend else None
        if backend is not None and backend.poll() is not None:
            return f"gearmand (exit status {backend.returncode})"
        return None

    def stop(self) -> None:
        """Stop stunnel first, so no client reaches a gearmand that is going away."""
        if self.stunnel is not None:
            if self.stunnel.poll() is None:
                self.stunnel.terminate()
                try:
                    self.stunnel.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    log.warning("stunnel (pid %d) ignored SIGTERM; killing it", self.stunnel.pid)
                    self.stunnel.kill()
                    self.stunnel.wait()
            if self._log_pump is not None:
                self._log_pump.join(_STOP_TIMEOUT)
                self._log_pump = None
            self.stunnel = None
        if self.backend is not None:
            self.backend.stop()
            self.backend = None
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def _check_alive(self) -> None:
        gone = self.dead()
        if gone:
            tail = _tail(self.log_file)
            self.stop()
            raise GearmanUnavailable(
                f"{gone} exited while starting mutual TLS on {self.address}"
                + (f": {tail}" if tail else "")
            )

    def __enter__(self) -> TlsGearmand:
        self.start()
        self.wait_ready()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def client_context(certs: CertPaths, name: str = "client") -> ssl.SSLContext:
    """The TLS settings pygearman uses, so the readiness probe proves what clients will see."""
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certs.dir / f"{name}.pem"), str(certs.dir / f"{name}.key"))
    return context


def tls_admin_command(
    host: str, port: int, certs: CertPaths, command: str, *, timeout: float = 5.0
) -> str:
    """Send one admin text command through TLS and return its first answer line."""
    context = client_context(certs)
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as conn,
    ):
        conn.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionResetError(f"{host}:{port} closed the connection")
            data += chunk
    return data.decode(errors="replace").strip()


def run_tls_foreground(settings: Settings, certs_dir: Path, listen: str, port: int) -> int:
    """`importer gearmand --tls`: run gearmand and stunnel until a signal, or until one dies.

    One without the other is useless (or, for gearmand on a public port, dangerous), so
    when either exits the other is stopped too and the exit code says so.
    """
    server = TlsGearmand(
        certs_dir=certs_dir,
        data_dir=settings.data_dir,
        listen=listen,
        port=port,
        job_retries=settings.gearmand_job_retries,
    )
    stop_signal: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_signal.append(signum)

    with _signals_handled(on_signal):
        server.start()
        try:
            server.wait_ready()
            log.info(
                "listening on %s with mutual TLS (certificates in %s); Ctrl-C stops",
                server.address,
                server.certs.dir,
            )
            while not stop_signal:
                gone = server.dead()
                if gone:
                    time.sleep(0.2)  # a signal to our group may be about to arrive too
                    if stop_signal:
                        break
                    log.error("%s stopped; stopping the other: %s", gone, _tail(server.log_file))
                    return int(ExitCode.service_unavailable)
                time.sleep(0.2)
            log.info(
                "signal %s: stopping stunnel and gearmand", signal.Signals(stop_signal[0]).name
            )
            return int(ExitCode.ok)
        finally:
            server.stop()


@contextmanager
def _signals_handled(handler: Any) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _tail(path: Path | None, lines: int = 5) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


# stunnel's syslog levels; a refused client is LOG3, which is the point of stunnel, not a fault.
_LEVELS = {
    "0": logging.CRITICAL,
    "1": logging.CRITICAL,
    "2": logging.CRITICAL,
    "3": logging.WARNING,
    "4": logging.WARNING,
    "5": logging.INFO,
    "6": logging.INFO,
    "7": logging.DEBUG,
}


def _pump_log(stream: IO[bytes] | None) -> None:
    """Route stunnel's stderr to a logger, so refused clients show up in our own log.

    stunnel marks each line LOG<n>[...] with a syslog level; that becomes the log level.
    """
    if stream is None:
        return
    with stream:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            match = _LOG_LEVEL.search(line)
            level = _LEVELS.get(match.group(1), logging.INFO) if match else logging.INFO
            stunnel_log.log(level, "%s", line[match.start() :] if match else line)

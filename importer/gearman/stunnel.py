"""Mutual TLS in front of gearmand: stunnel before a gearmand on a private loopback port.

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
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from importer.certs import CertPaths
from importer.errors import BadInput, GearmanUnavailable
from importer.gearman.address import format_address, free_port, parse_host, port_in_use
from importer.gearman.admin import admin_command
from importer.gearman.connection import ServerError
from importer.gearman.server import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    GearmandProcess,
    program_environment,
    tail_lines,
    terminate,
)

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
            "; written by importer.gearman.stunnel; regenerated on every start",
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
            "socket = a:SO_KEEPALIVE=1",  # a vanished worker host's connection is closed
            f"socket = a:TCP_KEEPIDLE={KEEPALIVE_IDLE}",
            f"socket = a:TCP_KEEPINTVL={KEEPALIVE_INTERVAL}",
            f"socket = a:TCP_KEEPCNT={KEEPALIVE_COUNT}",
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
        return format_address(self.listen, self.port)

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
                env=program_environment(),
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
                version = admin_command(parse_host(self.host_entry()), "version", timeout=2.0)[0]
            except ServerError as e:
                cause = e.__cause__
                if isinstance(cause, ssl.SSLCertVerificationError):
                    self.stop()
                    raise GearmanUnavailable(
                        f"the server certificate in {self.certs.dir} does not fit "
                        f"{self.dial_host} ({cause.verify_message}), so no client could connect: "
                        f"recreate it with "
                        f"`importer certs init {self.certs.dir} --host {self.dial_host} --force`"
                    ) from cause
                if isinstance(cause, ssl.SSLError) and "ALERT" in (cause.reason or ""):
                    self.stop()
                    raise GearmanUnavailable(
                        f"stunnel refused {self.certs.client_cert} ({cause.reason}): delete "
                        f"client.pem and client.key, then "
                        f"`importer certs client {self.certs.dir} client`"
                    ) from cause
                last = e  # stunnel may still be starting
                time.sleep(_PROBE_INTERVAL)
                continue
            log.info("gearmand %s behind mutual TLS on %s", version, self.address)
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
            terminate(self.stunnel, "stunnel", _STOP_TIMEOUT)
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

    def log_tail(self) -> str:
        """stunnel's last log lines, on one line for an error message."""
        return " | ".join(tail_lines(self.log_file, 5))

    def _check_alive(self) -> None:
        gone = self.dead()
        if gone:
            tail = self.log_tail()
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

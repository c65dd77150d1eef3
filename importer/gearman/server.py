"""A gearmand child process with safe defaults: loopback, explicit retries, a durable queue.

gearmand's own defaults are unsafe for us: it listens on every interface, retries a job
whose worker dies forever (`--job-retries 0`), and keeps its queue in memory. Every
gearmand this project starts (the `importer gearmand` command, `importer run`, the test
fixture) is built here, so those choices are made once.

Two findings about gearmand 1.1.20's libsqlite3 queue shape the arguments:

- `--store-queue-on-shutdown` keeps jobs in memory and writes them only on a clean
  shutdown: after a SIGKILL (or OOM kill, or power loss) every queued job is gone. We
  therefore do not pass it, and gearmand writes each job as it is submitted.
- Each submitted job is its own SQLite transaction, so the disk's fsync rate bounds
  submits. The database is created in WAL mode (the mode is stored in the file, so
  gearmand inherits it): one fdatasync per job instead of several. Measured on a 2-core VM:
  1,000-1,700 jobs/s with SQLite's default rollback journal, 4,500-8,000 in WAL mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from importer.errors import GearmanUnavailable
from importer.gearman.address import Server, format_address, free_port, port_in_use
from importer.gearman.admin import admin_command
from importer.gearman.connection import ServerError

log = logging.getLogger(__name__)

DEFAULT_BINARY = "/usr/sbin/gearmand"
QUEUE_DB = "gearmand-queue.sqlite"
LOG_FILE = "gearmand.log"
PID_FILE = "gearmand.pid"
STDERR_FILE = "gearmand.stderr"
INSTALL_FIX = "install it with: apt-get install gearman-job-server"


# What gearmand and stunnel may see of our environment: enough to find libraries and speak
# the locale, and none of the operator's secrets (IMPORTER_SECRET_KEYS, the database URL,
# the dashboard token), which any process of the same user could read from /proc/PID/environ.
PROGRAM_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def program_environment() -> dict[str, str]:
    """The allowlisted environment of every server program this project starts."""
    return {key: os.environ[key] for key in PROGRAM_ENV if key in os.environ}


def gearmand_binary() -> str | None:
    """The gearmand executable, or None; Debian installs it in /usr/sbin, often not on PATH."""
    found = shutil.which("gearmand")
    if found:
        return found
    return DEFAULT_BINARY if os.access(DEFAULT_BINARY, os.X_OK) else None


# A worker host that vanishes leaves a connection that nothing closes: TCP keepalive makes
# gearmand (or stunnel in front of it) see it dead within IDLE + COUNT * INTERVAL = 60 s
# of its last packet and hand the job on, inside the 90 s a cut-off host may cost.
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


def gearmand_argv(
    *,
    listen: str,
    port: int,
    data_dir: Path,
    job_retries: int,
    threads: int = 2,
    binary: str | None = None,
) -> list[str]:
    """The command line of a foreground gearmand whose state all lives in `data_dir`.

    `job_retries` must be at least 1: gearmand reads 0 as "retry forever", so a PDF that
    kills its worker would be handed to the next worker without end.
    """
    if job_retries < 1:
        raise ValueError(f"job_retries must be at least 1 (0 means unlimited), got {job_retries}")
    data_dir = Path(data_dir).resolve()
    return [
        binary or gearmand_binary() or DEFAULT_BINARY,
        "--listen",
        listen,
        "--port",
        str(port),
        "--job-retries",
        str(job_retries),
        "--threads",
        str(threads),
        "--keepalive",
        f"--keepalive-idle={KEEPALIVE_IDLE}",
        f"--keepalive-interval={KEEPALIVE_INTERVAL}",
        f"--keepalive-count={KEEPALIVE_COUNT}",
        "-q",
        "libsqlite3",
        f"--libsqlite3-db={data_dir / QUEUE_DB}",
        "--log-file",
        str(data_dir / LOG_FILE),
        "--pid-file",
        str(data_dir / PID_FILE),
        "--verbose",
        "WARNING",
    ]


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir and the queue database in WAL mode before gearmand opens it.

    Also safe after a SIGKILL: opening the database replays its write-ahead log.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(data_dir / QUEUE_DB)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def terminate(proc: subprocess.Popen[bytes], name: str, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the process has exited."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", name, proc.pid, grace)
        proc.kill()
        proc.wait()


def tail_lines(path: Path | None, count: int) -> list[str]:
    """The last `count` lines of a log file; none when it is missing or unreadable."""
    if path is None:
        return []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.strip().splitlines()[-count:]


class GearmandProcess:
    """One gearmand child process, owned from start to stop; also a context manager.

    The port is chosen once, so `restart()` brings gearmand back at the same address with
    the same queue, as a crashed and restarted production gearmand would be.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        listen: str = "127.0.0.1",
        port: int | None = None,
        job_retries: int = 3,
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.listen = listen
        self.port = port if port is not None else free_port(listen)
        self.job_retries = job_retries
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return format_address(self.listen, self.port)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running child, for callers that watch it alongside other processes."""
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def argv(self) -> list[str]:
        return gearmand_argv(
            listen=self.listen,
            port=self.port,
            data_dir=self.data_dir,
            job_retries=self.job_retries,
            binary=self.binary,
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start gearmand and return once it answers; raise GearmanUnavailable if it cannot."""
        if self.running:
            return
        argv = self.argv()
        if not (os.path.isfile(argv[0]) and os.access(argv[0], os.X_OK)):
            raise GearmanUnavailable(
                f"gearmand is not installed ({argv[0]} not found): {INSTALL_FIX}"
            )
        if port_in_use(self.listen, self.port):
            raise GearmanUnavailable(
                f"cannot start gearmand on {self.address}: the port is in use "
                "(another gearmand?); stop that process or choose another port"
            )
        prepare_data_dir(self.data_dir)
        (self.data_dir / PID_FILE).unlink(missing_ok=True)
        self._stderr = open(self.data_dir / STDERR_FILE, "ab")  # noqa: SIM115 (closed in _reap)
        log.info("starting gearmand: %s", " ".join(argv))
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            env=program_environment(),
            start_new_session=True,
        )
        self.wait_ready(timeout=timeout)

    def wait_ready(self, timeout: float = 10.0) -> str:
        """Wait until our gearmand (not another process on the port) answers; return its version."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                self._reap()
                raise GearmanUnavailable(
                    f"gearmand exited at start (exit code {code}) on {self.address}; "
                    f"is the port in use, or the data dir {self.data_dir} not writable?\n"
                    f"{self._log_tail()}"
                )
            try:
                pid = admin_command(Server(self.listen, self.port), "getpid")[0]
                if pid == str(self._proc.pid):
                    return admin_command(Server(self.listen, self.port), "version")[0]
                last_error = RuntimeError(
                    f"process {pid} answers on the port, not gearmand {self.pid}"
                )
                time.sleep(0.05)
            except ServerError as e:
                last_error = e
                time.sleep(0.05)
        self.kill()
        raise GearmanUnavailable(
            f"gearmand on {self.address} did not answer within {timeout:.0f} s "
            f"(last error: {last_error}); it was stopped\n{self._log_tail()}"
        )

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; a clean stop keeps the queue too."""
        if self._proc is None:
            return
        terminate(self._proc, "gearmand", grace)
        self._reap()

    def kill(self) -> None:
        """SIGKILL, as a crash would: for fault tests."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._reap()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (if running) and start again on the same port and queue database."""
        self.stop()
        self.start(timeout=timeout)

    def _reap(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._proc = None

    def _log_tail(self) -> str:
        parts = []
        for path in (self.data_dir / LOG_FILE, self.data_dir / STDERR_FILE):
            tail = "\n".join(tail_lines(path, 20))
            if tail:
                parts.append(f"--- last lines of {path} ---\n{tail}")
        return "\n".join(parts) or f"(nothing in {self.data_dir / LOG_FILE})"

    def __enter__(self) -> GearmandProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""`importer gearmand` in the foreground: plain on loopback, or behind stunnel with `--tls`.

Both run until a signal (SIGTERM, SIGINT) or until what they run exits, and return an exit
code; the previous signal handlers are back in place when they return.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from importer.errors import ExitCode, GearmanUnavailable
from importer.gearman.address import is_loopback
from importer.gearman.server import (
    DEFAULT_BINARY,
    INSTALL_FIX,
    LOG_FILE,
    gearmand_argv,
    gearmand_binary,
    prepare_data_dir,
    program_environment,
)
from importer.gearman.stunnel import TlsGearmand

if TYPE_CHECKING:
    from importer.config import Settings

log = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], None]


@contextlib.contextmanager
def signals_handled(handler: SignalHandler) -> Iterator[None]:
    """Route SIGTERM and SIGINT to `handler` inside the block; restore the old ones after."""
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_foreground(settings: Settings, listen: str, port: int) -> int:
    """Run gearmand in the foreground until it exits (`importer gearmand` without TLS).

    SIGTERM and SIGINT are passed on to gearmand, so it shuts down (and stores state)
    itself. Returns gearmand's exit code (128 + signal number if a signal ended it).
    """
    binary = gearmand_binary()
    if binary is None:
        raise GearmanUnavailable(
            f"gearmand is not installed ({DEFAULT_BINARY} not found): {INSTALL_FIX}"
        )
    if not is_loopback(listen):
        log.warning(
            "gearmand listens on %s without TLS: anyone who reaches port %d can read, submit "
            "and steal jobs; listen on 127.0.0.1 or use `importer gearmand --tls`",
            listen,
            port,
        )
    data_dir = Path(settings.data_dir)
    argv = gearmand_argv(
        listen=listen,
        port=port,
        data_dir=data_dir,
        job_retries=settings.gearmand_job_retries,
        binary=binary,
    )
    prepare_data_dir(data_dir)
    log.info("running gearmand (log: %s): %s", data_dir.resolve() / LOG_FILE, " ".join(argv))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=program_environment())

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    with signals_handled(forward):
        code = proc.wait()
    if code < 0:
        return 128 - code
    return code


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

    with signals_handled(on_signal):
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
                    log.error("%s stopped; stopping the other: %s", gone, server.log_tail())
                    return int(ExitCode.service_unavailable)
                time.sleep(0.2)
            log.info(
                "signal %s: stopping stunnel and gearmand", signal.Signals(stop_signal[0]).name
            )
            return int(ExitCode.ok)
        finally:
            server.stop()

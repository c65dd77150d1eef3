"""SMTP connections that cannot outlive their deadline, whatever the server does.

smtplib's `timeout` bounds each socket operation, not a conversation: a server that
accepts and never speaks holds it one timeout per step, and one that sends a byte now
and then holds it for ever. Here the connect gets what is left of the deadline, and a
timer shuts the connection down when the deadline passes, which ends any step waiting on
it at once; the caller then says the server did not answer in time.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import ssl
import threading
import time


class Deadline:
    """A monotonic instant; `left()` is what remains of it, never below a millisecond."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds to the deadline (at least a millisecond: a socket timeout of 0 would
        mean non-blocking)."""
        return max(0.001, self.at - time.monotonic())

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at


class Watchdog:
    """Shuts a socket down (both ways) at the deadline unless `done()` came first.

    It shuts a duplicate of the descriptor down: that ends the connection under a TLS
    socket too, without touching the SSL object another thread is using. The lock makes
    `done()` final: once it returns the timer can no longer reach the descriptor, which
    may then be closed and its number reused.
    """

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.fired = False
        self._lock = threading.Lock()
        self._finished = False
        self._timer: threading.Timer | None = None

    def watch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._timer = threading.Timer(self.deadline.left(), self._fire, args=(fd,))
        self._timer.daemon = True
        self._timer.start()

    def _fire(self, fd: int) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            with contextlib.suppress(OSError):
                dup = socket.socket(fileno=os.dup(fd))
                try:
                    dup.shutdown(socket.SHUT_RDWR)
                finally:
                    dup.close()

    def done(self) -> None:
        with self._lock:
            self._finished = True
        if self._timer is not None:
            self._timer.cancel()


class _Watched:
    """Mixin for smtplib's clients: the socket, once connected, is under the watchdog."""

    watchdog: Watchdog
    stage: str

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        self.watchdog.watch(sock)
        self.stage = "the greeting"
        return sock


class WatchedSMTP(_Watched, smtplib.SMTP):
    pass


class WatchedSMTPS(_Watched, smtplib.SMTP_SSL):
    pass


def open_client(
    host: str, port: int, *, deadline: Deadline, implicit_tls: bool, context: ssl.SSLContext
) -> WatchedSMTP | WatchedSMTPS:
    """Connect and read the greeting within the deadline; the client's `stage` names the
    step under way, for the message when the server stops answering."""
    # each step's socket timeout is what is left of the deadline; the watchdog ends the rest
    client: WatchedSMTP | WatchedSMTPS
    if implicit_tls:
        client = WatchedSMTPS(timeout=deadline.left(), context=context)
    else:
        client = WatchedSMTP(timeout=deadline.left())
    client.watchdog = Watchdog(deadline)
    client.stage = "the connection"
    # what TLS checks the certificate against; smtplib sets it in __init__ only
    setattr(client, "_host", host)  # noqa: B010 - smtplib's private field, not in its stubs
    try:
        client.connect(host, port)  # connects within the timeout, then reads the greeting
    except BaseException as e:
        client.watchdog.done()
        client.close()
        greeting_lost = isinstance(e, OSError | smtplib.SMTPServerDisconnected)
        if client.stage == "the greeting" and greeting_lost and deadline.passed:
            raise NoAnswer(client.stage) from e
        raise
    return client


class NoAnswer(Exception):
    """The server took the connection and said nothing more before the deadline."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage

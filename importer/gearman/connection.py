"""One blocking socket to one gearmand, plain or mutual TLS, read as binary packets or text lines.

Every failure (refused, reset, timed out, TLS refused, a reply that is not Gearman) becomes a
ServerError, with the socket's own error as its `__cause__`.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from importer.gearman.address import Server
from importer.gearman.tlscontext import client_context

REQ = b"\0REQ"
RES = b"\0RES"
HEADER = struct.Struct("!4sII")
JOB_CREATED = 8
ERROR = 19
STATUS_RES_UNIQUE = 42
# The replies we ask for, with how many NUL-separated arguments each carries.
REPLY_ARGS = {JOB_CREATED: 1, ERROR: 2, STATUS_RES_UNIQUE: 6}


class ServerError(Exception):
    """One server could not be used: refused, reset, timed out, TLS failure or protocol error."""


class ServerTimeout(ServerError):
    """The server did not answer in time: a hung server, so not worth a second connection."""


def failure(error: OSError) -> ServerError:
    if isinstance(error, TimeoutError):
        return ServerTimeout("timed out")
    return ServerError(error.strerror or str(error) or type(error).__name__)


def pack(command: int, *args: bytes) -> bytes:
    """One binary request packet."""
    body = b"\0".join(args)
    return HEADER.pack(REQ, command, len(body)) + body


class Connection:
    """A connected socket with a read buffer; `timeout` bounds the connect and each read."""

    def __init__(self, server: Server, timeout: float) -> None:
        self.server = server
        try:
            sock = socket.create_connection((server.host, server.port), timeout=timeout)
            if server.tls:
                context = client_context(
                    ca_certs=str(server.ca_certs),
                    certfile=str(server.certfile),
                    keyfile=str(server.keyfile),
                )
                sock = context.wrap_socket(sock, server_hostname=server.host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            raise failure(e) from e
        self.sock = sock
        self._buf = bytearray()
        self._pos = 0

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise failure(e) from e

    def _fill(self, need: int) -> None:
        """Read until `need` unread bytes are buffered."""
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        while len(self._buf) - self._pos < need:
            try:
                chunk = self.sock.recv(65536)
            except OSError as e:
                raise failure(e) from e
            if not chunk:
                raise ServerError("gearmand closed the connection")
            self._buf += chunk

    def read_packet(self) -> tuple[int, list[bytes]]:
        self._fill(HEADER.size)
        magic, command, size = HEADER.unpack_from(self._buf, self._pos)
        if magic != RES or command not in REPLY_ARGS:
            raise ServerError(f"unexpected reply (magic {magic!r}, command {command})")
        self._fill(HEADER.size + size)
        start = self._pos + HEADER.size
        body = bytes(self._buf[start : start + size])
        self._pos = start + size
        args = body.split(b"\0", REPLY_ARGS[command] - 1)
        if len(args) != REPLY_ARGS[command]:
            raise ServerError(f"malformed reply to command {command}: {body[:80]!r}")
        return command, args

    def read_line(self) -> str:
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end >= 0:
                line = bytes(self._buf[self._pos : end])
                self._pos = end + 1
                return line.decode(errors="replace").rstrip("\r")
            self._fill(len(self._buf) - self._pos + 1)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

"""The worker's gearmand connection, with a bound on the job data it will hold.

pygearman buffers a whole packet before it parses it: a job of a gigabyte, submitted by
anyone who reaches gearmand, would be held in the worker's memory before its signature
could be checked. Here the packet's size, announced in its 12-byte header, is looked at
as soon as the header has arrived: a job (JOB_ASSIGN, JOB_ASSIGN_UNIQ) larger than the
largest legal one (`importer.payload.max_job_bytes`, plus the packet's own framing) is
read off the socket and discarded as it comes, keeping only its first bytes (job handle,
function, unique), and handed to the worker as `Oversized` data, so that it is refused,
counted and completed at gearmand like every other bad job. Any other packet that large
is not Gearman from our server: the connection is closed.
"""

from __future__ import annotations

import struct
from typing import Any

from gearman.connection import GearmanConnection  # type: ignore[import-untyped]
from gearman.protocol import (  # type: ignore[import-untyped]
    GEARMAN_COMMAND_JOB_ASSIGN,
    GEARMAN_COMMAND_JOB_ASSIGN_UNIQ,
    GEARMAN_PARAMS_FOR_COMMAND,
)

HEADER = struct.Struct("!4sII")
# A packet's framing besides the job data: job handle (gearmand's `H:host:N`), function
# name and unique (at most 64 bytes), and the NULs between them.
FRAMING_BYTES = 1024
SKIP_CHUNK = 1 << 20
_JOBS = (GEARMAN_COMMAND_JOB_ASSIGN, GEARMAN_COMMAND_JOB_ASSIGN_UNIQ)


class Oversized(bytes):
    """The data of a job over the bound: empty, with the size gearmand announced."""

    announced: int

    def __new__(cls, announced: int) -> Oversized:
        made = super().__new__(cls)
        made.announced = announced
        return made


class BoundedConnection(GearmanConnection):  # type: ignore[misc]
    """A GearmanConnection that never buffers a packet over `limit` bytes of body."""

    def __init__(self, *args: Any, limit: int, **kwargs: Any) -> None:
        self.limit = limit + FRAMING_BYTES
        super().__init__(*args, **kwargs)

    def _reset_connection(self) -> None:
        super()._reset_connection()
        self._skipping: tuple[int, int] | None = None  # (command, announced size)
        self._left = 0  # bytes of the skipped packet still to come
        self._kept = bytearray()  # its first FRAMING_BYTES

    def _unpack_command(self, given_buffer: Any) -> tuple[Any, Any, int]:
        if len(given_buffer) >= HEADER.size and given_buffer[0] == 0:
            _magic, command, size = HEADER.unpack(given_buffer[: HEADER.size].tobytes())
            if size > self.limit:
                if command not in _JOBS:
                    self.throw_exception(
                        message=f"gearmand sent a packet of {size:,} bytes (command {command})"
                    )
                self._skipping = (command, size)
                self._left = size
                self._take(given_buffer[HEADER.size :].tobytes())
                del self._incoming_buffer[:]
                return None, None, 0
        return super()._unpack_command(given_buffer)  # type: ignore[no-any-return]

    def read_data_from_socket(self, bytes_to_read: int = 4096) -> int:
        if self._skipping is None:
            return super().read_data_from_socket(bytes_to_read)  # type: ignore[no-any-return]
        received = super().read_data_from_socket(min(self._left, SKIP_CHUNK))
        chunk = self._incoming_buffer.tobytes()
        del self._incoming_buffer[:]
        self._take(chunk)
        return received  # type: ignore[no-any-return]

    def _take(self, chunk: bytes) -> None:
        """Count `chunk` against the skipped packet; once it is whole, queue the job."""
        assert self._skipping is not None
        mine, rest = chunk[: self._left], chunk[self._left :]
        self._left -= len(mine)
        if len(self._kept) < FRAMING_BYTES:
            self._kept += mine[: FRAMING_BYTES - len(self._kept)]
        if self._left:
            return
        command, size = self._skipping
        self._skipping = None
        names = GEARMAN_PARAMS_FOR_COMMAND[command]
        fields = bytes(self._kept).split(b"\0", len(names) - 1)
        self._kept = bytearray()
        if len(fields) != len(names):
            self.throw_exception(message=f"a job of {size:,} bytes without its framing")
        fields[-1] = Oversized(size)
        self._incoming_commands.append((command, dict(zip(names, fields, strict=True))))
        self._incoming_buffer.frombytes(rest)

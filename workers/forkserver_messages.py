"""What a worker and its fork server (`workers.forkserver`) say on their control socket.

Each message is one SOCK_SEQPACKET datagram holding one JSON object; the descriptors of
a fork request travel with it as SCM_RIGHTS. The worker asks (`op`), the server reports
(`t`); each class below shows its datagram. Either side reads the other's with
`decode_request` / `decode_report`, which raise MalformedMessage for anything else.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar, Self, TypeVar

from workers.wire import Fields, MalformedMessage, json_object

MAX_CONTROL = 64 * 1024  # one control message


class _Control:
    key: ClassVar[str]  # "op" for a request, "t" for a report
    name: ClassVar[str]

    def encode(self) -> bytes:
        body = {self.key: self.name, **dataclasses.asdict(self)}  # type: ignore[call-overload]
        return json.dumps(body).encode()

    @classmethod
    def _read(cls, f: Fields) -> Self:
        raise NotImplementedError


# The worker asks --------------------------------------------------------------------


@dataclass(frozen=True)
class Fork(_Control):
    """Fork one document child; the datagram carries its stdin, stdout, stderr, ...::

    {"op": "fork"}
    """

    key, name = "op", "fork"

    @classmethod
    def _read(cls, f: Fields) -> Fork:
        return cls()


@dataclass(frozen=True)
class Kill(_Control):
    """SIGKILL the child's process group, unless the server has reaped it already::

    {"op": "kill", "pid": 4242}
    """

    key, name = "op", "kill"
    pid: int

    @classmethod
    def _read(cls, f: Fields) -> Kill:
        return cls(f.integer("pid", minimum=1))


# The server reports -----------------------------------------------------------------


@dataclass(frozen=True)
class Ready(_Control):
    """Once, when the server has imported the reading code and waits for requests::

    {"t": "ready", "pid": 4100}
    """

    key, name = "t", "ready"
    pid: int

    @classmethod
    def _read(cls, f: Fields) -> Ready:
        return cls(f.integer("pid", minimum=1))


@dataclass(frozen=True)
class Forked(_Control):
    """The answer to a fork request: the child's pid::

    {"t": "forked", "pid": 4242}
    """

    key, name = "t", "forked"
    pid: int

    @classmethod
    def _read(cls, f: Fields) -> Forked:
        return cls(f.integer("pid", minimum=1))


@dataclass(frozen=True)
class ForkFailed(_Control):
    """The answer to a fork request the server could not carry out::

    {"t": "error", "reason": "BlockingIOError: [Errno 11] Resource temporarily unavailable"}
    """

    key, name = "t", "error"
    reason: str

    @classmethod
    def _read(cls, f: Fields) -> ForkFailed:
        return cls(f.text("reason"))


@dataclass(frozen=True)
class Exited(_Control):
    """A child was reaped (its group killed first); `status` as Popen.returncode::

    {"t": "exit", "pid": 4242, "status": -9}
    """

    key, name = "t", "exit"
    pid: int
    status: int

    @classmethod
    def _read(cls, f: Fields) -> Exited:
        return cls(f.integer("pid", minimum=1), f.integer("status"))


Request = Fork | Kill
Report = Ready | Forked | ForkFailed | Exited
_REQUESTS: dict[str, type[Request]] = {cls.name: cls for cls in (Fork, Kill)}
_REPORTS: dict[str, type[Report]] = {cls.name: cls for cls in (Ready, Forked, ForkFailed, Exited)}


def decode_request(data: bytes) -> Request:
    """A worker's request, as the fork server reads it."""
    return _decode(data, "op", "fork server request", _REQUESTS)


def decode_report(data: bytes) -> Report:
    """A fork server's report, as the worker reads it."""
    return _decode(data, "t", "fork server message", _REPORTS)


C = TypeVar("C", bound=_Control)


def _decode(data: bytes, key: str, what: str, kinds: dict[str, type[C]]) -> C:
    body = json_object(data, limit=MAX_CONTROL, what=what)
    name = body.get(key)
    cls = kinds.get(name) if isinstance(name, str) else None
    if cls is None:
        raise MalformedMessage(f"{what} of unknown kind {name!r:.60}")
    names = [key, *(field.name for field in dataclasses.fields(cls))]  # type: ignore[arg-type]
    return cls._read(Fields(body, f"{what} {name}", names))

"""A real SMTP server for tests: aiosmtpd in this process on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """aiosmtpd handler that keeps every message it accepts."""

    received: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        )
        return "250 OK"


@dataclass
class Server:
    host: str
    port: int
    recorder: Recorder

    @property
    def received(self) -> list[Received]:
        return self.recorder.received


def running(controller: Controller, recorder: Recorder) -> Iterator[Server]:
    controller.start()
    try:
        yield Server(controller.hostname, controller.port, recorder)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[Server]:
    recorder = Recorder()
    yield from running(Controller(recorder, hostname="127.0.0.1", port=free_port()), recorder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Silent:
    """A TCP server that accepts connections and never says a word: a hung mail server."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.listener.accept()[0])

    def close(self) -> None:
        self.listener.close()
        for sock in self.accepted:
            sock.close()


@pytest.fixture
def silent_server() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


@dataclass
class Answering(Recorder):
    """aiosmtpd handler that answers DATA with `reply` (a 4xx or 5xx: a refusing server),
    or never answers it when `reply` is None (a server that hangs on the message)."""

    reply: str | None = "550 5.7.1 relaying denied"
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply is None:
            await self.release.wait()  # never set: the client gives up first
            return "250 OK"
        return self.reply


def answering(reply: str | None) -> Iterator[Server]:
    handler = Answering(reply=reply)
    yield from running(Controller(handler, hostname="127.0.0.1", port=free_port()), handler)

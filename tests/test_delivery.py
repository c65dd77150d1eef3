"""E-mail leaves from the supervisor's courier, never from the job path: a mail server that
accepts connections and does not answer holds up no document."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, importer
from tests.smtp_fixture import Server


class HeldServer:
    """Accepts SMTP connections and says nothing until released; then relays each one to
    the real server, so a delivery caught waiting completes as it would have."""

    def __init__(self, upstream: Server) -> None:
        self.upstream = upstream
        self.released = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self.accepted += 1
                threading.Thread(target=self._hold, args=(client,), daemon=True).start()

    def _hold(self, client: socket.socket) -> None:
        self.released.wait()
        upstream = socket.create_connection((self.upstream.host, self.upstream.port))
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def held(smtp_server: Server) -> Iterator[HeldServer]:
    server = HeldServer(smtp_server)
    yield server
    server.close()


def test_a_mail_server_that_does_not_answer_holds_up_no_document(
    env: dict[str, str], held: HeldServer, smtp_server: Server, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for number in range(3):  # distinct files, one worker: each waits for the one before
        data = (SAMPLES / "born_digital.pdf").read_bytes() + f"\n%{number}\n".encode()
        (inbox / f"doc-{number}.pdf").write_bytes(data)
    shutil.copy(SAMPLES / "born_digital.txt", inbox / "ignored.txt")
    env["IMPORTER_MAIL_URL"] = f"smtp://127.0.0.1:{held.port}"
    env["IMPORTER_ALLOWED_ROOTS"] = str(inbox)
    batch = json.loads(
        importer(
            "submit", str(inbox), "--email", "ops@example.com", "--notify", "each", "--json",
            env=env, check=True,
        ).stdout
    )["batch_id"]  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "importer", "worker", "--burst", "--concurrency", "1"], env=env
    )
    try:
        deadline = time.monotonic() + 25  # a held delivery in the job path waits 30 s
        while True:  # every document done while the mail server has not said a word
            status = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
            if status["batches"][0]["done"] == 3:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert held.accepted >= 1, "no delivery was attempted while the documents ran"
        assert smtp_server.received == []
        held.released.set()  # the server answers: what waited is delivered
        assert worker.wait(60) == 0
    finally:
        worker.kill()
    subjects = sorted(str(m.message["Subject"]) for m in smtp_server.received)
    assert len(subjects) == 3, subjects

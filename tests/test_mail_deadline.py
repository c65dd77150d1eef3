"""A mail server that does not answer, or refuses, holds nothing up and is never reported
as a delivery: each try ends by IMPORTER_MAIL_DEADLINE_SECONDS, the e-mail waits in the
outbox with the reason, and `importer mail flush` delivers it exactly once."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.errors import MailUnavailable
from importer.mail import MailServerDown, send_message
from importer.notify import document_message
from tests.conftest import SAMPLES, importer
from tests.smtp_fixture import Server, Silent, answering, free_port
from tests.test_notify import MAIL_FROM, _document

SECONDS = 1.5


@pytest.fixture
def hangs_on_data() -> Iterator[Server]:
    yield from answering(None)


@pytest.fixture
def refusing() -> Iterator[Server]:
    yield from answering("550 5.7.1 relaying denied")


def _send(url: str) -> float:
    started = time.monotonic()
    send_message(document_message(_document(), mail_from=MAIL_FROM), url, timeout=SECONDS)
    return time.monotonic() - started


def test_silent_server_ends_the_try_by_the_deadline(silent_server: Silent) -> None:
    started = time.monotonic()
    with pytest.raises(MailServerDown, match="did not answer the greeting within 1.5 s"):
        _send(f"smtp://127.0.0.1:{silent_server.port}")
    assert time.monotonic() - started < SECONDS + 1


def test_server_that_never_answers_data(hangs_on_data: Server) -> None:
    started = time.monotonic()
    with pytest.raises(MailServerDown, match="did not answer the message within"):
        _send(f"smtp://{hangs_on_data.host}:{hangs_on_data.port}")
    assert time.monotonic() - started < SECONDS + 1


def test_refusing_server_is_a_refusal_not_an_outage(refusing: Server) -> None:
    with pytest.raises(MailUnavailable, match="550 5.7.1 relaying denied") as caught:
        _send(f"smtp://{refusing.host}:{refusing.port}")
    assert not isinstance(caught.value, MailServerDown)


def test_closed_port_is_an_outage() -> None:
    with pytest.raises(MailServerDown, match="cannot connect"):
        _send(f"smtp://127.0.0.1:{free_port()}")


def _documents(folder: Path, n: int) -> Path:
    folder.mkdir()
    for number in range(n):
        data = (SAMPLES / "born_digital.pdf").read_bytes() + f"\n%{number}\n".encode()
        (folder / f"doc-{number}.pdf").write_bytes(data)
    return folder


def _run(env: dict[str, str], folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return importer(
        "run", str(folder), "--email", "ops@example.com", "--notify", "each", "--workers", "1",
        *extra, env=env, timeout=120,
    )  # fmt: skip


def test_run_with_a_silent_server_ends_and_says_the_mail_waits(
    env: dict[str, str], silent_server: Silent, smtp_server: Server, tmp_path: Path
) -> None:
    folder = _documents(tmp_path / "in", 4)
    env["IMPORTER_MAIL_URL"] = f"smtp://127.0.0.1:{silent_server.port}"
    env["IMPORTER_MAIL_DEADLINE_SECONDS"] = str(SECONDS)
    started = time.monotonic()
    proc = _run(env, folder)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "delivered to" not in proc.stdout
    assert "4 e-mails waiting in the outbox, not delivered" in proc.stdout
    assert "did not answer the greeting" in proc.stdout
    assert "importer mail flush" in proc.stdout
    assert took < 20, took  # one try, not one per e-mail (each would wait its deadline)
    assert len(silent_server.accepted) <= 2, "each e-mail waited on the same silence"

    # the server is fixed: a flush delivers each once, and a worker's courier adds none
    env["IMPORTER_MAIL_URL"] = f"smtp://{smtp_server.host}:{smtp_server.port}"
    flushed = importer("mail", "flush", "--json", env=env)
    assert flushed.returncode == 0, flushed.stderr
    report = json.loads(flushed.stdout)
    assert report["delivered"] == 4 and report["outbox"] == {
        "delivered": 4, "waiting": 0, "untried": 0, "reason": None,
    }  # fmt: skip
    worker = subprocess.run(
        [sys.executable, "-m", "importer", "worker", "--burst"], env=env, timeout=60
    )
    assert worker.returncode == 0
    assert len(smtp_server.received) == 4
    assert importer("mail", "flush", env=env).returncode == 0  # nothing waits: exit 0


def test_run_with_a_refusing_server_says_why(
    env: dict[str, str], refusing: Server, tmp_path: Path
) -> None:
    folder = _documents(tmp_path / "in", 2)
    env["IMPORTER_MAIL_URL"] = f"smtp://{refusing.host}:{refusing.port}"
    proc = _run(env, folder, "--json")
    assert proc.returncode == 0, proc.stderr
    mail = json.loads(proc.stdout)["mail"]
    assert mail["delivered"] == 0 and mail["waiting"] == 2
    assert "550 5.7.1 relaying denied" in mail["reason"]
    flushed = importer("mail", "flush", env=env)
    assert flushed.returncode == 1
    assert "2 e-mails waiting in the outbox" in flushed.stdout


def test_run_with_a_closed_port(env: dict[str, str], tmp_path: Path) -> None:
    folder = _documents(tmp_path / "in", 1)
    env["IMPORTER_MAIL_URL"] = f"smtp://127.0.0.1:{free_port()}"
    proc = _run(env, folder)
    assert "1 e-mail waiting in the outbox, not delivered" in proc.stdout
    assert "delivered to" not in proc.stdout
    assert importer("mail", "flush", env=env).returncode == 3


def test_server_that_trickles_its_greeting_is_cut_off(silent_server: Silent) -> None:
    """A line of greeting now and then resets every socket timeout; the deadline holds."""

    def trickle() -> None:
        while silent_server.accepted == []:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            while True:
                silent_server.accepted[0].sendall(b"220-still here\r\n")
                time.sleep(0.3)

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(MailServerDown, match="did not answer"):
        _send(f"smtp://127.0.0.1:{silent_server.port}")
    assert time.monotonic() - started < SECONDS + 1

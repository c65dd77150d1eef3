"""E-mail: composing summaries and delivering them to a real SMTP server or a Maildir.

The SMTP server is aiosmtpd running in this process on a free loopback port; the TLS
tests give it a certificate from a throwaway CA made here, which the client is told to
trust through SSL_CERT_FILE, the same way an operator trusts a private relay.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import mailbox
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from importer.certs import init_ca_dir
from importer.errors import BadInput, MailUnavailable
from importer.mail import mail_url_warnings, parse_mail_url, send_message
from importer.notify import (
    BatchSummary,
    DocumentSummary,
    FailedDocument,
    batch_message,
    document_message,
    format_duration,
    validate_address,
)
from importer.states import DocStatus
from tests.smtp_fixture import Recorder, Server, free_port, running

MAIL_FROM = "Importer <importer@localhost>"
USER, PASSWORD = "mailer", "p@ss:w/rd"  # characters that must be URL-decoded
PASSWORD_IN_URL = "p%40ss%3Aw%2Frd"


# Servers ----------------------------------------------------------------------------


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A private CA and a server certificate for localhost and 127.0.0.1: the same ones
    `importer certs init` makes, here serving a mail relay."""
    made = init_ca_dir(tmp_path_factory.mktemp("certs"))
    return Certs(made.ca_cert, made.server_cert, made.server_key)


@pytest.fixture
def trust_ca(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))


@pytest.fixture
def starttls_server(certs: Certs) -> Iterator[Server]:
    """Requires STARTTLS before anything, and a login that only works over TLS."""
    recorder = Recorder()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=certs.server_context(),
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=_authenticator,
    )
    yield from running(controller, recorder)


@pytest.fixture
def smtps_server(certs: Certs) -> Iterator[Server]:
    """Implicit TLS from the first byte, as on port 465."""
    recorder = Recorder()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        ssl_context=certs.server_context(),
        server_hostname="localhost",
        # aiosmtpd cannot tell that an implicit-TLS transport is encrypted.
        auth_require_tls=False,
        auth_required=True,
        authenticator=_authenticator,
    )
    yield from running(controller, recorder)


# Messages ---------------------------------------------------------------------------

CREATED = dt.datetime(2024, 5, 1, 10, 0, 0)
FINISHED = dt.datetime(2024, 5, 1, 10, 3, 12)
HOSTILE_NAME = "/data/evil\r\nBcc: victim@example.com\n\u202egpj.pdf"
UNICODE_NAME = "/data/Übersicht – März 2024.pdf"


def _summary(**changes: Any) -> BatchSummary:
    values: dict[str, Any] = {
        "batch_id": "01J0BATCH0000000000000000",
        "email": "ops@example.com",
        "total": 14,
        "done": 12,
        "pages": 345,
        "failed": [
            FailedDocument(HOSTILE_NAME, DocStatus.failed, "encrypted PDF: no password given"),
            FailedDocument(UNICODE_NAME, DocStatus.dead, "worker died 3 times\nlast: SIGKILL"),
        ],
        "skipped": 3,
        "created_at": CREATED,
        "finished_at": FINISHED,
    }
    values.update(changes)
    return BatchSummary(**values)


def _document(**changes: Any) -> DocumentSummary:
    values: dict[str, Any] = {
        "batch_id": "01J0BATCH0000000000000000",
        "job_id": "01J0JOB",
        "email": "ops@example.com",
        "path": UNICODE_NAME,
        "status": DocStatus.failed,
        "pages": 0,
        "error": "not a PDF",
        "seconds": 1.5,
    }
    values.update(changes)
    return DocumentSummary(**values)


def _body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_batch_message_headers_and_body() -> None:
    message = batch_message(_summary(), mail_from=MAIL_FROM)
    assert message["Subject"] == (
        "[importer] batch 01J0BATCH0000000000000000 done: 12 of 14 documents imported, 2 failed"
    )
    assert message["To"] == "ops@example.com"
    assert message["From"].addresses[0].addr_spec == "importer@localhost"
    assert "01J0BATCH0000000000000000" in message["Message-ID"]
    assert message["Date"].datetime == FINISHED.replace(tzinfo=dt.UTC)
    body = _body(message)
    assert "12 of 14 documents, 345 pages" in body
    assert "3 min 12 s" in body
    assert "Skipped:   3" in body
    assert "encrypted PDF: no password given" in body
    assert UNICODE_NAME in body
    assert "status: dead" in body and "last: SIGKILL" in body
    assert "importer status 01J0BATCH0000000000000000" in body
    assert "importer retry 01J0BATCH0000000000000000" in body


def test_hostile_file_name_stays_in_the_body_escaped() -> None:
    message = batch_message(_summary(), mail_from=MAIL_FROM)
    raw = message.as_bytes()
    head = raw.split(b"\n\n", 1)[0].decode()
    assert "victim" not in head and "Bcc" not in head
    body = _body(message)
    assert "evil\\r\\nBcc: victim@example.com\\n\\u202egpj.pdf" in body
    assert not any(line.startswith("Bcc:") for line in body.splitlines())
    reparsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert reparsed["Bcc"] is None


def test_message_id_is_stable_per_finish() -> None:
    first = batch_message(_summary(), mail_from=MAIL_FROM)
    again = batch_message(_summary(), mail_from=MAIL_FROM)
    after_retry = batch_message(
        _summary(finished_at=FINISHED + dt.timedelta(hours=1)), mail_from=MAIL_FROM
    )
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Message-ID"] != after_retry["Message-ID"]


def test_every_failure_is_listed() -> None:
    failed = [
        FailedDocument(f"/data/f{i:03}.pdf", DocStatus.failed, f"bad {i}") for i in range(300)
    ]
    body = _body(batch_message(_summary(total=300, done=0, failed=failed), mail_from=MAIL_FROM))
    assert all(f"/data/f{i:03}.pdf" in body and f"bad {i}\n" in body for i in range(300))


def test_clean_batch_subject_has_no_failures() -> None:
    message = batch_message(_summary(done=14, failed=[]), mail_from=MAIL_FROM)
    assert message["Subject"].endswith("done: 14 of 14 documents imported")
    assert "importer retry" not in _body(message)


def test_document_message() -> None:
    message = document_message(_document(), mail_from=MAIL_FROM)
    assert message["Subject"] == "[importer] document failed (batch 01J0BATCH0000000000000000)"
    assert UNICODE_NAME not in str(message["Subject"])
    body = _body(message)
    assert UNICODE_NAME in body and "not a PDF" in body and "importer retry" in body
    done = document_message(
        _document(status=DocStatus.done, pages=1, error=None), mail_from=MAIL_FROM
    )
    assert done["Subject"].startswith("[importer] document done: 1 page imported")


def test_bad_sender_names_the_setting() -> None:
    with pytest.raises(BadInput, match="IMPORTER_MAIL_FROM"):
        batch_message(_summary(), mail_from="importer@localhost\r\nBcc: x@y.com")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "under 1 s"),
        (45, "45 s"),
        (192, "3 min 12 s"),
        (7500, "2 h 5 min"),
        (90000, "1 d 1 h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# Addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "normalized"),
    [
        ("ops@example.com", "ops@example.com"),
        ("user@localhost", "user@localhost"),
        ("  Ops@Example.COM ", "Ops@example.com"),
        ("jürgen@example.de", "jürgen@example.de"),
    ],
)
def test_validate_address_accepts(address: str, normalized: str) -> None:
    assert validate_address(address) == normalized


@pytest.mark.parametrize(
    "address",
    [
        "",
        "no-at-sign",
        "a@",
        "@example.com",
        "a@b@example.com",
        "a@b.com\r\nBcc: x@y.com",
        "a@b.com\nBcc: x@y.com",
        "a@b.com, c@d.com",
        "a@b.com;c@d.com",
        "Ops <ops@example.com>",
        "a@b.com\x00",
        "a b@example.com",
    ],
)
def test_validate_address_rejects(address: str) -> None:
    with pytest.raises(BadInput, match=r"invalid e-mail address .*ops@example\.com"):
        validate_address(address)


# SMTP -------------------------------------------------------------------------------


def test_smtp_delivery(smtp_server: Server) -> None:
    url = f"smtp://{smtp_server.host}:{smtp_server.port}"
    send_message(batch_message(_summary(), mail_from=MAIL_FROM), url, timeout=5)
    [got] = smtp_server.received
    assert got.rcpt_tos == ["ops@example.com"]
    assert got.mail_from == "importer@localhost"
    message = got.message
    assert message["Subject"].startswith("[importer] batch 01J0BATCH0000000000000000 done")
    assert message["Bcc"] is None
    body = _body(message)
    assert "encrypted PDF: no password given" in body
    assert UNICODE_NAME in body and "worker died 3 times" in body


def test_starttls_with_login(starttls_server: Server, trust_ca: None) -> None:
    url = f"smtp://{USER}:{PASSWORD_IN_URL}@localhost:{starttls_server.port}?starttls=true"
    assert mail_url_warnings(url) == []
    send_message(document_message(_document(), mail_from=MAIL_FROM), url, timeout=5)
    [got] = starttls_server.received
    assert got.rcpt_tos == ["ops@example.com"]
    assert "not a PDF" in _body(got.message)


def test_starttls_wrong_password(starttls_server: Server, trust_ca: None) -> None:
    url = f"smtp://{USER}:wrong@localhost:{starttls_server.port}?starttls=true"
    with pytest.raises(MailUnavailable, match="rejected the login") as caught:
        send_message(document_message(_document(), mail_from=MAIL_FROM), url, timeout=5)
    assert "wrong" not in caught.value.message
    assert starttls_server.received == []


def test_untrusted_certificate(starttls_server: Server, tmp_path: Path, monkeypatch: Any) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    url = f"smtp://{USER}:{PASSWORD_IN_URL}@localhost:{starttls_server.port}?starttls=true"
    with pytest.raises(MailUnavailable, match="SSL_CERT_FILE"):
        send_message(document_message(_document(), mail_from=MAIL_FROM), url, timeout=5)


def test_password_without_tls_is_refused_and_warned(starttls_server: Server) -> None:
    url = f"smtp://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{starttls_server.port}"
    [warning] = mail_url_warnings(url)
    assert "plain text" in warning and "starttls=true" in warning
    assert PASSWORD not in warning
    with pytest.raises(MailUnavailable, match="starttls=true"):
        send_message(document_message(_document(), mail_from=MAIL_FROM), url, timeout=5)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtps_with_login(smtps_server: Server, trust_ca: None) -> None:
    url = f"smtps://{USER}:{PASSWORD_IN_URL}@localhost:{smtps_server.port}"
    send_message(document_message(_document(), mail_from=MAIL_FROM), url, timeout=5)
    assert [got.rcpt_tos for got in smtps_server.received] == [["ops@example.com"]]


def test_unreachable_server_names_host_and_port() -> None:
    port = free_port()
    with pytest.raises(MailUnavailable, match=f"127.0.0.1:{port}"):
        send_message(
            document_message(_document(), mail_from=MAIL_FROM),
            f"smtp://127.0.0.1:{port}",
            timeout=5,
        )


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com",
        "mail.example.com:25",
        "smtp://",
        "smtp://mail.example.com:notaport",
        "smtp://mail.example.com:25?tls=yes",
        "smtp://mail.example.com:25?starttls=maybe",
        "smtps://mail.example.com:465?starttls=true",
        "smtp://user@mail.example.com:25",
        "maildir://relative/path",
    ],
)
def test_bad_url_names_the_setting(url: str) -> None:
    with pytest.raises(BadInput, match="IMPORTER_MAIL_URL"):
        parse_mail_url(url)


def test_bad_url_hides_the_password() -> None:
    with pytest.raises(BadInput) as caught:
        parse_mail_url("smtp://user:s3cret@mail.example.com:25?bogus=1")
    assert "s3cret" not in caught.value.message


# Maildir ----------------------------------------------------------------------------


def test_maildir_delivery(tmp_path: Path) -> None:
    box_path = tmp_path / "data" / "mail"
    send_message(batch_message(_summary(), mail_from=MAIL_FROM), f"maildir://{box_path}")
    send_message(document_message(_document(), mail_from=MAIL_FROM), f"maildir://{box_path}")
    assert len(list((box_path / "new").iterdir())) == 2
    assert list((box_path / "tmp").iterdir()) == []
    subjects = sorted(str(m["Subject"]) for m in mailbox.Maildir(box_path, create=False))
    assert subjects[0].startswith("[importer] batch 01J0BATCH0000000000000000 done")
    assert subjects[1].startswith("[importer] document failed")


def test_maildir_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(MailUnavailable, match=str(blocker / "mail")):
        send_message(
            document_message(_document(), mail_from=MAIL_FROM), f"maildir://{blocker}/mail"
        )

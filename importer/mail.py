"""Mail transports: hand a finished message to a Maildir or an SMTP server.

Composing messages lives in `importer.notify`; this module only delivers them, so the
embedded setup (a Maildir in the data dir, no server at all) and a real relay share
one code path above it. Every failure becomes `MailUnavailable` with the host or path
and what to do, because the caller is usually a worker that logs it and moves on.
"""

from __future__ import annotations

import contextlib
import logging
import mailbox
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from importer.errors import BadInput, MailUnavailable
from importer.gearman.address import format_address, is_loopback
from importer.smtp_bounded import Deadline, NoAnswer, WatchedSMTP, WatchedSMTPS, open_client

log = logging.getLogger(__name__)

SETTING = "IMPORTER_MAIL_URL"
_EXAMPLES = (
    "maildir:///var/lib/importer/mail or smtp://user:pass@mail.example.com:587?starttls=true"
)
_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class MaildirTarget:
    """A Maildir on this machine: the embedded default, readable with any mail client."""

    path: Path

    def describe(self) -> str:
        return f"maildir {self.path}"


@dataclass(frozen=True)
class SmtpTarget:
    """An SMTP server; the password is kept out of repr so it never reaches a log line."""

    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def encrypted(self) -> bool:
        return self.implicit_tls or self.starttls

    def describe(self) -> str:
        return f"mail server {self.address}"


MailTarget = MaildirTarget | SmtpTarget


def parse_mail_url(mail_url: str) -> MailTarget:
    """Turn IMPORTER_MAIL_URL into a target, rejecting anything ambiguous up front.

    A typo here would otherwise surface only when the first batch finishes, hours
    after submit, so unknown schemes and query keys are errors rather than ignored.
    """
    url = mail_url.strip()
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise _bad(url, "it has no scheme")
    scheme = scheme.lower()
    if scheme == "maildir":
        return _parse_maildir(url[len("maildir://") :], url)
    if scheme in _DEFAULT_PORTS:
        return _parse_smtp(url, scheme)
    raise _bad(url, f"unknown scheme {scheme!r} (use maildir, smtp or smtps)")


def _parse_maildir(rest: str, url: str) -> MaildirTarget:
    # The rest is taken literally (no percent-decoding): the settings module builds the
    # default from the data dir's path as is, and such a path may contain '%' or '?'.
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest.startswith("/"):
        raise _bad(url, "a maildir URL needs an absolute path, as in maildir:///abs/path")
    return MaildirTarget(Path(rest))


def _parse_smtp(url: str, scheme: str) -> SmtpTarget:
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as e:
        raise _bad(url, "the port is not a number between 1 and 65535") from e
    host = parts.hostname
    if not host:
        raise _bad(url, "it names no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise _bad(url, "an SMTP URL takes no path")
    starttls = False
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "starttls":
            raise _bad(url, f"unknown option {key!r} (the only option is starttls=true)")
        if value.lower() not in _TRUE | _FALSE:
            raise _bad(url, f"starttls={value!r} is neither true nor false")
        starttls = value.lower() in _TRUE
    if scheme == "smtps" and starttls:
        raise _bad(url, "smtps:// is already encrypted; drop ?starttls=true or use smtp://")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username and password is None:
        raise _bad(url, f"it names user {username!r} without a password (smtp://user:pass@host)")
    return SmtpTarget(
        host=host,
        port=port,
        implicit_tls=scheme == "smtps",
        starttls=starttls,
        username=username,
        password=password,
    )


def _bad(url: str, why: str) -> BadInput:
    shown = _redact(url)
    return BadInput(f"{SETTING}={shown!r} is not a mail URL: {why}; examples: {_EXAMPLES}")


def _redact(url: str) -> str:
    """Hide a password before the URL appears in an error message or a log."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}"


def mail_url_warnings(mail_url: str) -> list[str]:
    """Say what in a working mail URL still exposes something (for `importer doctor`).

    Raises BadInput when the URL does not parse, so doctor reports one problem, not two.
    """
    target = parse_mail_url(mail_url)
    warnings: list[str] = []
    if isinstance(target, SmtpTarget) and target.password is not None and not target.encrypted:
        where = "over loopback" if is_loopback(target.host) else "across the network"
        warnings.append(
            f"{SETTING} sends the password for {target.username!r} to {target.address} "
            f"{where} in plain text: add ?starttls=true or use smtps://"
        )
    return warnings


class MailServerDown(MailUnavailable):
    """The mail server itself is not answering: refused, unreachable, or silent past the
    deadline. The next e-mail would wait the same, so a delivery pass stops at the first."""


DEADLINE_SETTING = "IMPORTER_MAIL_DEADLINE_SECONDS"


def send_message(message: EmailMessage, mail_url: str, *, timeout: float = 10) -> None:
    """Deliver one composed message within `timeout` seconds, every step and all of them
    together; raise MailUnavailable (MailServerDown: the server did not answer) unless it
    was accepted. Once the server has accepted it, nothing raises: a later try would
    deliver it twice."""
    target = parse_mail_url(mail_url)
    if isinstance(target, MaildirTarget):
        _deliver_maildir(message, target)
    else:
        _deliver_smtp(message, target, deadline=Deadline(timeout))
    log.info(
        "mail %s to %s delivered to %s",
        message.get("Message-ID", "(no id)"),
        message.get("To", "(no recipient)"),
        target.describe(),
    )


def _deliver_maildir(message: EmailMessage, target: MaildirTarget) -> None:
    # mailbox.Maildir writes into tmp/ and then links or renames into new/, so a reader
    # never sees half a message, even when several workers deliver at the same time.
    try:
        target.path.parent.mkdir(parents=True, exist_ok=True)
        box = mailbox.Maildir(target.path, create=True)
        box.add(message)
    except OSError as e:
        raise MailUnavailable(
            f"cannot write mail to maildir {target.path}: {e.strerror or e}; make the "
            f"directory writable by this user or point {SETTING} at another maildir:///path"
        ) from e


def check_server(mail_url: str, *, timeout: float) -> None:
    """Ask an SMTP server for its greeting and EHLO, within `timeout`; MailServerDown
    when it does not answer. A maildir has nothing to ask. Done once when a courier starts,
    so a silent server is known before the first e-mail waits on it."""
    target = parse_mail_url(mail_url)
    if isinstance(target, SmtpTarget):
        _deliver_smtp(None, target, deadline=Deadline(timeout))


def _connect(
    target: SmtpTarget, deadline: Deadline, context: ssl.SSLContext
) -> WatchedSMTP | WatchedSMTPS:
    """Connect and read the greeting; every failure says the server is down or silent."""
    where = target.address
    try:
        return open_client(
            target.host,
            target.port,
            deadline=deadline,
            implicit_tls=target.implicit_tls,
            context=context,
        )
    except ssl.SSLError as e:
        raise MailUnavailable(_tls_advice(where, e)) from e
    except smtplib.SMTPConnectError as e:
        raise MailServerDown(
            f"mail server {where} turned the connection away ({e.smtp_code} "
            f"{_text(e.smtp_error)}); it sends nothing now, try later or fix {SETTING}"
        ) from e
    except NoAnswer as e:
        raise MailServerDown(_silent_advice(where, e.stage, deadline)) from e
    except (OSError, smtplib.SMTPException) as e:
        raise MailServerDown(
            f"cannot connect to mail server {where}: {_reason(e)}; start it, or fix the host "
            f"and port in {SETTING}"
        ) from e


def _deliver_smtp(message: EmailMessage | None, target: SmtpTarget, *, deadline: Deadline) -> None:
    """Deliver `message`, or with None only greet and say EHLO (`check_server`)."""
    where = target.address
    context = ssl.create_default_context()
    client = _connect(target, deadline, context)
    accepted = False
    try:
        client.stage = "EHLO"
        client.ehlo_or_helo_if_needed()
        if target.starttls:
            client.stage = "STARTTLS"
            client.starttls(context=context)
            client.ehlo()
        if message is None:
            accepted = True  # nothing to send: say QUIT politely
            return
        if target.username is not None:
            client.stage = "the login"
            client.login(target.username, target.password or "")
        client.stage = "the message"
        client.send_message(message)
        accepted = True
    except smtplib.SMTPNotSupportedError as e:
        raise MailUnavailable(_unsupported_advice(where, target, e)) from e
    except smtplib.SMTPAuthenticationError as e:
        raise MailUnavailable(
            f"mail server {where} rejected the login of {target.username!r} "
            f"({e.smtp_code} {_text(e.smtp_error)}); fix the user name or password in {SETTING}"
        ) from e
    except smtplib.SMTPSenderRefused as e:
        raise MailUnavailable(
            f"mail server {where} refused the sender {e.sender} "
            f"({e.smtp_code} {_text(e.smtp_error)}); set IMPORTER_MAIL_FROM to an address "
            "it accepts"
        ) from e
    except smtplib.SMTPRecipientsRefused as e:
        refused = ", ".join(
            f"{rcpt} ({code} {_text(text)})" for rcpt, (code, text) in sorted(e.recipients.items())
        )
        raise MailUnavailable(
            f"mail server {where} refused the recipient {refused}; check the address "
            "given to --email, or the relay rules of that server"
        ) from e
    except smtplib.SMTPResponseException as e:
        raise MailUnavailable(
            f"mail server {where} refused {client.stage} ({e.smtp_code} "
            f"{_text(e.smtp_error)}); a 4xx answer may pass, a 5xx one needs the server fixed"
        ) from e
    except ssl.SSLError as e:
        raise MailUnavailable(_tls_advice(where, e)) from e
    except (OSError, smtplib.SMTPException) as e:
        if _silent(e, deadline, client.watchdog.fired):
            raise MailServerDown(_silent_advice(where, client.stage, deadline)) from e
        raise MailServerDown(
            f"mail server {where} did not accept the message: {_reason(e)}; check the server "
            f"and {SETTING}"
        ) from e
    finally:
        _close(client, accepted)


def _close(client: WatchedSMTP | WatchedSMTPS, accepted: bool) -> None:
    """QUIT and close; errors after the server accepted the message change nothing."""
    try:
        if accepted:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()
    finally:
        client.watchdog.done()
        client.close()


def _silent(error: BaseException, deadline: Deadline, fired: bool) -> bool:
    """Whether the deadline, rather than the server, ended the conversation."""
    return fired or isinstance(error, TimeoutError) or deadline.passed


def _silent_advice(where: str, stage: str, deadline: Deadline) -> str:
    return (
        f"mail server {where} accepted the connection but did not answer {stage} within "
        f"{round(deadline.seconds, 1):g} s ({DEADLINE_SETTING}); check that it is an SMTP "
        f"server and that it is running, or fix the host and port in {SETTING}"
    )


def _tls_advice(where: str, error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"the TLS certificate of mail server {where} could not be verified "
            f"({error.verify_message}); name the host its certificate was issued for in "
            f"{SETTING}, or trust its CA with SSL_CERT_FILE=/path/to/ca.pem"
        )
    return (
        f"TLS with mail server {where} failed ({error.reason or error}); use smtps:// for a "
        "port that starts with TLS (often 465) and ?starttls=true for one that upgrades (587)"
    )


def _unsupported_advice(where: str, target: SmtpTarget, error: Exception) -> str:
    text = str(error)
    if "STARTTLS" in text:
        return (
            f"mail server {where} does not offer STARTTLS; use smtps:// if it starts with TLS, "
            f"or remove ?starttls=true from {SETTING} on a trusted network"
        )
    if "AUTH" in text and not target.encrypted:
        return (
            f"mail server {where} offers no login over an unencrypted connection; add "
            f"?starttls=true (or use smtps://) in {SETTING}"
        )
    if "AUTH" in text:
        return (
            f"mail server {where} offers no login (AUTH); remove user:password from "
            f"{SETTING} if it needs none, or enable authentication on the server"
        )
    return f"mail server {where} does not support what the message needs ({text}); see {SETTING}"


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

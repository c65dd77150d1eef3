"""Compose the e-mails a submitter receives: one per batch, or one per document.

File names and error texts come from the files being imported, so they are treated as
hostile: they only ever appear in the plain-text body, escaped so that a name holding a
newline or a bidi override cannot forge lines, and never in a header. Headers are built
with `email.headerregistry`, which refuses CR/LF outright.
"""

from __future__ import annotations

import email.policy
import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage

from email_validator import EmailNotValidError, validate_email

from importer.errors import BadInput
from importer.states import DocStatus

_EXAMPLE = "give one address such as ops@example.com"
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_LOCAL_DOMAINS = ("localhost",)


# Example: FailedDocument("/data/scans/2019/a.pdf", DocStatus.failed, "encrypted PDF")
@dataclass(frozen=True)
class FailedDocument:
    """One document of a batch that was not imported, with the reason shown to the user."""

    path: str
    status: DocStatus
    reason: str


@dataclass(frozen=True)
class BatchSummary:
    """Everything the batch e-mail says, gathered from the database when the batch ends."""

    batch_id: str
    email: str
    total: int
    done: int
    pages: int
    failed: list[FailedDocument]
    skipped: int
    created_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class DocumentSummary:
    """Everything a per-document e-mail (`--notify each`) says."""

    batch_id: str
    job_id: str
    email: str
    path: str
    status: DocStatus
    pages: int
    error: str | None
    seconds: float


# Addresses --------------------------------------------------------------------------


def validate_address(address: str) -> str:
    """Check a notification address at submit time, hours before any mail is sent.

    Exactly one bare address is accepted: a comma, a semicolon or a line break could
    otherwise smuggle extra recipients or headers into the message. `user@localhost`
    is allowed because the embedded setup delivers to a local Maildir.
    """
    if not isinstance(address, str):
        raise BadInput(f"invalid e-mail address {address!r}: it is not text; {_EXAMPLE}")
    why = _shape_problem(address)
    if why:
        raise _bad_address(address, why)
    text = address.strip()
    local, _, domain = text.rpartition("@")
    is_local = any(domain.lower() == d or domain.lower().endswith("." + d) for d in _LOCAL_DOMAINS)
    try:
        if is_local:
            # email-validator rejects special-use names outright; check the local part
            # against an ordinary domain and keep the local one.
            checked = validate_email(f"{local}@example.com", check_deliverability=False)
            return f"{checked.local_part}@{domain.lower()}"
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as e:
        raise _bad_address(address, str(e).rstrip(".")) from e


def _shape_problem(address: str) -> str | None:
    if not address.strip():
        return "it is empty"
    if "\r" in address or "\n" in address:
        return "it contains a line break"
    if any(unicodedata.category(ch) == "Cc" for ch in address):
        return "it contains a control character"
    if "," in address or ";" in address:
        return "it lists more than one address"
    if "<" in address or ">" in address:
        return "give the bare address, without a name or angle brackets"
    return None


def _bad_address(address: str, why: str) -> BadInput:
    return BadInput(f"invalid e-mail address {address!r}: {why}; {_EXAMPLE}")


def _sender(mail_from: str) -> Address:
    """IMPORTER_MAIL_FROM may be `addr` or `Name <addr>`; either way it is validated."""
    try:
        if any(unicodedata.category(ch) == "Cc" for ch in mail_from):
            raise BadInput("it contains a line break or control character")
        header = email.policy.default.header_factory("From", mail_from)
        addresses: tuple[Address, ...] = tuple(getattr(header, "addresses", ()))
        if len(addresses) != 1 or header.defects:
            raise BadInput("it is not one `address` or `Name <address>`")
        found = addresses[0]
        return Address(display_name=found.display_name, addr_spec=validate_address(found.addr_spec))
    except BadInput as e:
        raise BadInput(
            f"IMPORTER_MAIL_FROM={mail_from!r} is not a usable sender ({e.message}); "
            "set it to an address such as importer@example.com"
        ) from e


# Messages ---------------------------------------------------------------------------


def batch_message(summary: BatchSummary, *, mail_from: str) -> EmailMessage:
    """The summary a submitter gets once, when the last document of a batch finishes.

    The Message-ID is derived from the batch id and its finish time: a summary sent
    twice for the same finish shows up as a duplicate, while the summary after an
    `importer retry` is a new message that mail clients will not suppress.
    """
    failed = len(summary.failed)
    noun = "document" if summary.total == 1 else "documents"
    subject = (
        f"[importer] batch {_printable(summary.batch_id)} done: "
        f"{summary.done} of {summary.total} {noun} imported"
    )
    if failed:
        subject += f", {failed} failed"
    finished = _aware(summary.finished_at)
    message = _envelope(
        mail_from=mail_from,
        to=summary.email,
        subject=subject,
        date=finished,
        id_parts=("batch", summary.batch_id, finished.strftime("%Y%m%dT%H%M%SZ")),
        batch_id=summary.batch_id,
    )
    _set_body(message, _batch_body(summary))
    return message


def document_message(summary: DocumentSummary, *, mail_from: str) -> EmailMessage:
    """One e-mail per finished document, for `--notify each`."""
    batch = _printable(summary.batch_id)
    if summary.status == DocStatus.done:
        pages = "page" if summary.pages == 1 else "pages"
        subject = f"[importer] document done: {summary.pages} {pages} imported (batch {batch})"
    else:
        subject = f"[importer] document {summary.status} (batch {batch})"
    message = _envelope(
        mail_from=mail_from,
        to=summary.email,
        subject=subject,
        date=datetime.now(UTC),
        id_parts=("doc", summary.job_id, str(summary.status)),
        batch_id=summary.batch_id,
    )
    _set_body(message, _document_body(summary))
    return message


def _envelope(
    *,
    mail_from: str,
    to: str,
    subject: str,
    date: datetime,
    id_parts: tuple[str, ...],
    batch_id: str,
) -> EmailMessage:
    sender = _sender(mail_from)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = Address(addr_spec=validate_address(to))
    message["Subject"] = subject
    message["Date"] = date
    token = ".".join(_token(part) for part in id_parts)
    message["Message-ID"] = f"<importer.{token}@{sender.domain or 'localhost'}>"
    message["X-Importer-Batch"] = _token(batch_id)
    # RFC 3834: keeps vacation responders from answering a machine.
    message["Auto-Submitted"] = "auto-generated"
    return message


def _batch_body(summary: BatchSummary) -> str:
    batch = _printable(summary.batch_id)
    kinds = Counter(str(doc.status) for doc in summary.failed)
    kinds_text = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    took = format_duration(
        (_aware(summary.finished_at) - _aware(summary.created_at)).total_seconds()
    )
    lines = [
        f"Batch {batch} has finished.",
        "",
        f"  Imported:  {summary.done} of {summary.total} documents, {summary.pages} pages",
        f"  Failed:    {len(summary.failed)}" + (f" ({kinds_text})" if kinds_text else ""),
        f"  Skipped:   {summary.skipped} (not queued when submitted)",
        f"  Took:      {took}",
        f"  Submitted: {_when(summary.created_at)}",
        f"  Finished:  {_when(summary.finished_at)}",
    ]
    if summary.failed:
        lines += ["", f"Documents that were not imported ({len(summary.failed)}):"]
        for doc in summary.failed:
            lines += [
                "",
                f"  {_printable(doc.path)}",
                f"    status: {doc.status}",
                f"    reason: {_multiline(doc.reason, indent='            ')}",
            ]
    lines += [
        "",
        "To look further:",
        f"  importer status {batch}    every document of the batch and its state",
    ]
    if summary.failed:
        lines.append(
            f"  importer retry {batch}     queue the documents that were not imported again"
        )
    return "\n".join(lines) + "\n"


def _document_body(summary: DocumentSummary) -> str:
    batch = _printable(summary.batch_id)
    lines = [
        f"A document of batch {batch} is {summary.status}.",
        "",
        f"  File:    {_printable(summary.path)}",
        f"  Status:  {summary.status}",
        f"  Pages:   {summary.pages}",
        f"  Took:    {format_duration(summary.seconds)}",
        f"  Job id:  {_printable(summary.job_id)}",
    ]
    if summary.error:
        lines.append(f"  Reason:  {_multiline(summary.error, indent='           ')}")
    lines += ["", "To look further:", f"  importer status {batch}"]
    if summary.status != DocStatus.done:
        lines.append(f"  importer retry {batch}")
    return "\n".join(lines) + "\n"


def _set_body(message: EmailMessage, body: str) -> None:
    # Quoted-printable keeps a body with accented file names readable in raw form and
    # in `grep` over a Maildir; the library would otherwise often pick base64.
    if body.isascii():
        message.set_content(body)
    else:
        message.set_content(body, cte="quoted-printable")


# Text helpers -----------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """Render a duration the way a person says it: '45 s', '3 min 12 s', '2 h 5 min'."""
    if seconds < 1:
        return "under 1 s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _printable(text: str) -> str:
    """Escape what could forge a line or hide text: controls, bidi overrides, surrogates.

    Surrogates matter too: file names read with surrogateescape carry them, and they
    cannot be encoded into the UTF-8 body at all.
    """
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES
        else ch
        for ch in text
    )


def _multiline(text: str, *, indent: str) -> str:
    """Keep an error's own line breaks, indented so they cannot pass for a new entry."""
    lines = [_printable(line) for line in text.splitlines()] or [""]
    return ("\n" + indent).join(lines)


def _token(text: str) -> str:
    """A Message-ID-safe piece: the id itself when it is plain, else a stable hash."""
    if _TOKEN.fullmatch(text):
        return text
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _aware(moment: datetime) -> datetime:
    """The database hands back naive UTC times (SQLite); treat them as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _when(moment: datetime) -> str:
    return _aware(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

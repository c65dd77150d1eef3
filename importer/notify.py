"""Compose the e-mails a submitter receives: one per batch, or one per document.

Each is multipart/alternative: a plain-text part and an HTML part (importer.report_mail)
that say the same. File names and error texts come from the files being imported, so they
are treated as hostile: they only ever appear in the bodies, with what could forge a line
or hide text escaped (importer.report_text), HTML-escaped in the HTML part, and never in a
header. Headers are built with `email.headerregistry`, which refuses CR/LF outright.
"""

from __future__ import annotations

import email.policy
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage

from email_validator import EmailNotValidError, validate_email

from importer.errors import BadInput
from importer.report_mail import render_html
from importer.report_text import (
    aware,
    count,
    format_duration,
    multiline,
    printable,
    when,
)
from importer.states import DocStatus

_EXAMPLE = "give one address such as ops@example.com"
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_LOCAL_DOMAINS = ("localhost",)

# A batch e-mail names at most this many failed documents, and as many with pages to
# review; it says how many more there are and which command lists them all.
LISTED = 1_000


# Example: FailedDocument("/data/scans/2019/a.pdf", DocStatus.failed, "encrypted PDF", "encrypted")
@dataclass(frozen=True)
class FailedDocument:
    """One document of a batch that was not imported, with the reason shown to the user
    and its stable kind (documents.error_kind) when the worker gave one."""

    path: str
    status: DocStatus
    reason: str
    kind: str | None = None


# Example: ReviewDocument("/data/scans/2019/b.pdf", pages_review=2, pages=14)
@dataclass(frozen=True)
class ReviewDocument:
    """An imported document with pages read badly enough that a person should look."""

    path: str
    pages_review: int
    pages: int


@dataclass(frozen=True)
class BatchSummary:
    """Everything the batch e-mail says, gathered from the database when the batch ends.

    `failed` and `review` hold the first `LISTED` documents by path; the counts beside
    them are of all documents (None: count the list).
    """

    batch_id: str
    email: str
    total: int
    done: int
    pages: int
    failed: list[FailedDocument]
    skipped: int
    created_at: datetime
    finished_at: datetime
    failed_count: int | None = None
    dead_count: int | None = None
    pages_text_layer: int = 0
    pages_ocr: int = 0
    pages_review: int = 0
    review: list[ReviewDocument] = field(default_factory=list)
    review_count: int | None = None
    archive_dir: str | None = None  # where the batch's searchable PDFs are (--archive)

    @property
    def n_failed(self) -> int:
        if self.failed_count is not None:
            return self.failed_count
        return sum(doc.status == DocStatus.failed for doc in self.failed)

    @property
    def n_dead(self) -> int:
        if self.dead_count is not None:
            return self.dead_count
        return sum(doc.status == DocStatus.dead for doc in self.failed)

    @property
    def not_imported(self) -> int:
        return self.n_failed + self.n_dead

    @property
    def failed_unlisted(self) -> int:
        return max(0, self.not_imported - len(self.failed))

    @property
    def n_review(self) -> int:
        return len(self.review) if self.review_count is None else self.review_count

    @property
    def review_unlisted(self) -> int:
        return max(0, self.n_review - len(self.review))

    @property
    def seconds(self) -> float:
        return (aware(self.finished_at) - aware(self.created_at)).total_seconds()


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
    error_kind: str | None = None
    pages_text_layer: int = 0
    pages_ocr: int = 0
    pages_review: int = 0
    archive: str | None = None  # its searchable PDF, once done (--archive)


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
    noun = "document" if summary.total == 1 else "documents"
    subject = (
        f"[importer] batch {printable(summary.batch_id)} done: "
        f"{count(summary.done)} of {count(summary.total)} {noun} imported"
    )
    if summary.not_imported:
        subject += f", {count(summary.not_imported)} failed"
    finished = aware(summary.finished_at)
    message = _envelope(
        mail_from=mail_from,
        to=summary.email,
        subject=subject,
        date=finished,
        id_parts=("batch", summary.batch_id, finished.strftime("%Y%m%dT%H%M%SZ")),
        batch_id=summary.batch_id,
    )
    html = render_html(
        "batch.html", summary=summary, batch=printable(summary.batch_id), subject=subject
    )
    _set_body(message, _batch_body(summary), html)
    return message


def document_message(summary: DocumentSummary, *, mail_from: str) -> EmailMessage:
    """One e-mail per finished document, for `--notify each`."""
    batch = printable(summary.batch_id)
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
    html = render_html("document.html", summary=summary, batch=batch, subject=subject)
    _set_body(message, _document_body(summary), html)
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
    batch = printable(summary.batch_id)
    kinds = {"dead": summary.n_dead, "failed": summary.n_failed}
    kinds_text = ", ".join(f"{count(n)} {kind}" for kind, n in kinds.items() if n)
    lines = [
        f"Batch {batch} has finished.",
        "",
        f"  Imported:  {count(summary.done)} of {count(summary.total)} documents, "
        f"{count(summary.pages)} pages",
        f"  Pages:     {count(summary.pages_text_layer)} from the text layer, "
        f"{count(summary.pages_ocr)} by OCR, {count(summary.pages_review)} to review",
        f"  Failed:    {count(summary.not_imported)}" + (f" ({kinds_text})" if kinds_text else ""),
        f"  Skipped:   {count(summary.skipped)} (not queued when submitted)",
        f"  Started:   {when(summary.created_at)}",
        f"  Finished:  {when(summary.finished_at)}",
        f"  Took:      {format_duration(summary.seconds)}",
    ]
    if summary.archive_dir:
        lines.append(f"  Archive:   {printable(summary.archive_dir)} (the searchable PDFs)")
    if summary.failed:
        lines += ["", f"Documents that were not imported ({count(summary.not_imported)}):"]
        for doc in summary.failed:
            lines += ["", f"  {printable(doc.path)}", f"    status: {doc.status}"]
            if doc.kind:
                lines.append(f"    kind:   {printable(doc.kind)}")
            lines.append(f"    reason: {multiline(doc.reason, indent='            ')}")
        if summary.failed_unlisted:
            lines += [
                "",
                f"  ... and {count(summary.failed_unlisted)} more, not listed here; "
                "every document with its reason:",
                f"      importer status {batch} --all",
            ]
    if summary.review:
        lines += [
            "",
            f"Documents with pages to review ({count(summary.n_review)}), "
            "read below the review confidence:",
            "",
        ]
        lines += [
            f"  {printable(doc.path)}: {count(doc.pages_review)} of {count(doc.pages)} pages"
            for doc in summary.review
        ]
        if summary.review_unlisted:
            lines += [
                "",
                f"  ... and {count(summary.review_unlisted)} more, not listed here; "
                "every page to review:",
                f"      importer export {batch} --review",
            ]
    commands = [
        (f"importer status {batch}", "every document of the batch and its state"),
        (f"importer export {batch} --format csv", "one row per document: pages, reason"),
    ]
    if summary.not_imported:
        commands.append((f"importer retry {batch}", "queue the documents not imported again"))
    width = max(len(command) for command, _ in commands)
    lines += ["", "To look further:"]
    lines += [f"  {command.ljust(width)}  {what}" for command, what in commands]
    return "\n".join(lines) + "\n"


def _document_body(summary: DocumentSummary) -> str:
    batch = printable(summary.batch_id)
    lines = [
        f"A document of batch {batch} is {summary.status}.",
        "",
        f"  File:    {printable(summary.path)}",
        f"  Status:  {summary.status}",
        f"  Pages:   {count(summary.pages)}",
    ]
    if summary.status == DocStatus.done:
        lines.append(
            f"           {count(summary.pages_text_layer)} from the text layer, "
            f"{count(summary.pages_ocr)} by OCR, {count(summary.pages_review)} to review"
        )
    if summary.archive:
        lines.append(f"  Archive: {printable(summary.archive)}")
    lines += [
        f"  Took:    {format_duration(summary.seconds)}",
        f"  Job id:  {printable(summary.job_id)}",
    ]
    if summary.error_kind:
        lines.append(f"  Kind:    {printable(summary.error_kind)}")
    if summary.error:
        lines.append(f"  Reason:  {multiline(summary.error, indent='           ')}")
    lines += ["", "To look further:", f"  importer status {batch}"]
    if summary.status != DocStatus.done:
        lines.append(f"  importer retry {batch}")
    return "\n".join(lines) + "\n"


def _set_body(message: EmailMessage, text: str, html: str) -> None:
    """multipart/alternative: the plain text first, the HTML last (the one clients prefer).

    Quoted-printable keeps a body with accented file names readable in raw form and in
    `grep` over a Maildir; the library would otherwise often pick base64.
    """
    message.set_content(text, cte=_encoding(text))
    message.add_alternative(html, subtype="html", cte=_encoding(html))


def _encoding(body: str) -> str | None:
    return None if body.isascii() else "quoted-printable"


# Message-ID -------------------------------------------------------------------------


def _token(text: str) -> str:
    """A Message-ID-safe piece: the id itself when it is plain, else a stable hash."""
    if _TOKEN.fullmatch(text):
        return text
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]

"""What `importer run` and `importer mail flush` say of the e-mails: only what the outbox
table says happened. "delivered" appears only for e-mails with `sent_at`; every other one
is "waiting", with the reason its last try failed and what will deliver it."""

from __future__ import annotations

from importer.mail import MaildirTarget, parse_mail_url
from importer.mail_flush import Flushed
from importer.outbox import MailState
from importer.report_text import printable
from importer.states import NotifyMode

LABEL = "e-mail:   "
INDENT = " " * len(LABEL)
WHO_DELIVERS = (
    "out with the courier of any `importer worker` on this database, which retries with"
    " backoff, or now: importer mail flush"
)


def _noun(n: int) -> str:
    return f"{n} e-mail" if n == 1 else f"{n} e-mails"


def where(mail_url: str) -> str:
    target = parse_mail_url(mail_url)
    if isinstance(target, MaildirTarget):
        return f"the maildir {target.path}/new/"
    return target.describe()


def mail_lines(state: MailState, mail_url: str, notify: NotifyMode | None = None) -> list[str]:
    """The summary's e-mail lines, e.g.::

    e-mail:   8 e-mails delivered to mail server mail.example.com:25
    e-mail:   8 e-mails waiting in the outbox, not delivered: mail server ... did not
              answer the greeting within 10 s (IMPORTER_MAIL_DEADLINE_SECONDS); ...
              they go out with the courier of any `importer worker` ..., or now:
              importer mail flush
    """
    if state.total == 0:
        why = " (--notify none)" if notify is NotifyMode.none else ""
        return [f"{LABEL}none{why}"]
    lines = []
    if state.delivered:
        lines.append(f"{LABEL}{_noun(state.delivered)} delivered to {where(mail_url)}")
    if state.waiting:
        reason = printable(state.reason) if state.reason else "not tried yet"
        lead = LABEL if not lines else INDENT
        lines.append(f"{lead}{_noun(state.waiting)} waiting in the outbox, not delivered: {reason}")
        pronoun = "they go" if state.waiting > 1 else "it goes"
        lines.append(f"{INDENT}{pronoun} {WHO_DELIVERS}")
    return lines


def flush_lines(flushed: Flushed, mail_url: str) -> list[str]:
    """What `importer mail flush` prints: what it tried, then what the outbox holds."""
    lines = [f"flush:    {_noun(flushed.tried)} tried, {flushed.delivered} delivered now"]
    if flushed.server_down:
        lines.append(f"{INDENT}stopped: {printable(flushed.server_down)}")
    state = flushed.state
    if state.total == 0:
        return [*lines, f"{LABEL}the outbox is empty"]
    if state.delivered:
        lines.append(f"{LABEL}{_noun(state.delivered)} delivered in all")
    if state.waiting:
        reason = printable(state.reason) if state.reason else "being sent by a courier now"
        lines.append(f"{LABEL}{_noun(state.waiting)} waiting in the outbox: {reason}")
    return lines

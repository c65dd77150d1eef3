"""The plain-text part of an e-mail, however it was read (a Maildir's or SMTP's parser)."""

from __future__ import annotations

from email.message import Message


def plain_text(message: Message) -> str:
    """The text/plain part of a multipart/alternative summary, decoded."""
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError(f"no text/plain part in {message.get_content_type()} message")

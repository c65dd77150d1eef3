"""The outbox key: which e-mail an outbox row is, written by the lifecycle, read by delivery.

The key is unique in the outbox table, so deciding the same e-mail twice adds no second
row. Examples (the column's text)::

    doc:j-5f0c2a9e1b7d4c3a8e6f0b1d      one document's e-mail (`--notify each`), by job id
    batch:20260101-120000-a1b2c3:1767268800.123456
                                        a batch's summary, by batch id and the time it
                                        closed (a batch reopened by `retry` closes again
                                        and gets another e-mail)
    batch:20260101-120000-a1b2c3        the same, as rows written before the close time
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MAX_KEY = 128  # the column's width


class BadOutboxKey(ValueError):
    """An outbox row whose key is not one of ours."""


class MailKind(StrEnum):
    document = "doc"
    batch = "batch"


_CLOSED = re.compile(r"\d+\.\d{6}")


@dataclass(frozen=True)
class OutboxKey:
    kind: MailKind
    id: str  # the document's job id, or the batch id
    closed: str | None = None  # a batch's close time: Unix seconds, six decimals

    def __post_init__(self) -> None:
        if self.closed is not None and (
            self.kind is not MailKind.batch or not _CLOSED.fullmatch(self.closed)
        ):
            raise BadOutboxKey(f"only a batch key has a close time, as seconds: {self!r:.100}")

    @classmethod
    def document(cls, job_id: str) -> OutboxKey:
        return cls(MailKind.document, job_id)

    @classmethod
    def batch(cls, batch_id: str, closed_at: datetime) -> OutboxKey:
        return cls(MailKind.batch, batch_id, f"{closed_at.timestamp():.6f}")

    def encode(self) -> str:
        key = f"{self.kind.value}:{self.id}"
        return key if self.closed is None else f"{key}:{self.closed}"

    @classmethod
    def decode(cls, key: str) -> OutboxKey:
        kind, sep, rest = key.partition(":")
        if not sep or not rest or len(key) > MAX_KEY:
            raise BadOutboxKey(f"outbox key {key[:MAX_KEY]!r} is not kind:id")
        if kind == MailKind.document:
            return cls(MailKind.document, rest)
        if kind != MailKind.batch:
            raise BadOutboxKey(f"outbox key {key[:MAX_KEY]!r} has an unknown kind {kind!r}")
        batch_id, sep, closed = rest.rpartition(":")
        if not sep:
            return cls(MailKind.batch, rest)
        if not batch_id or not _CLOSED.fullmatch(closed):
            raise BadOutboxKey(f"outbox key {key[:MAX_KEY]!r} has no valid close time")
        return cls(MailKind.batch, batch_id, closed)

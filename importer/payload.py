"""The job payload: the one module both the submitter and the worker import.

The classic PHP import job sent ``"file||:||email"`` in clear; ours is the same two
facts made explicit, plus what a worker needs to refuse a forged or replayed job.
Example (one line on the wire)::

    {"v": 1, "job_id": "j-8c1f...", "file": "/data/in/a.pdf", "email": "ops@example.com",
     "kid": "k1", "iat": 1795824000, "sig": "3q2+7w..."}

``sig`` is HMAC-SHA256, keyed by the secret named ``kid``, over the canonical JSON of
every other field (sorted keys, no spaces).

An inline job (``submit --inline``) carries the file itself, for workers that cannot see
the submitter's disk: the same signed header, plus the bytes' ``sha256`` and ``length``,
a newline (canonical JSON never holds a raw one), then the raw bytes::

    {"email":"ops@example.com","file":"/data/in/a.pdf","iat":1795824000,"job_id":"j-8c1f...",
     "kid":"k1","length":5,"sha256":"<64 hex digits>","sig":"3q2+7w...","v":1}\n%PDF-

MAX_PAYLOAD_BYTES bounds the header only. `decode_job` checks the bytes' length and
sha256 against the signed header before anyone parses them; `decode` reads a header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from importer.errors import PayloadRejected

VERSION = 1
MAX_PAYLOAD_BYTES = 16 * 1024
CLOCK_SKEW_SECONDS = 300

Keyring = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Payload:
    job_id: str
    file: str
    email: str
    kid: str = ""
    iat: int = 0
    v: int = VERSION
    sha256: str | None = None  # inline jobs only: the bytes that follow the header
    length: int | None = None

    @property
    def inline(self) -> bool:
        return self.length is not None

    def _signed_part(self) -> bytes:
        fields = asdict(self)
        for name in _INLINE_FIELDS:  # absent, not null, in a job that carries no bytes
            if fields[name] is None:
                del fields[name]
        return _canonical(fields)


_INLINE_FIELDS = ("sha256", "length")


@dataclass(frozen=True)
class Job:
    """A verified job: its header and, for an inline job, its bytes (already checked
    against the header's length and sha256; a view into the received data, not a copy)."""

    payload: Payload
    content: memoryview | None = None


def _mac(secret: bytes, message: bytes) -> str:
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def encode(
    job_id: str,
    file: str,
    email: str,
    *,
    keyring: Keyring,
    now: float | None = None,
    content: bytes | None = None,
) -> bytes:
    """Sign with the newest key (the first of the ring); with `content`, an inline job."""
    if not keyring:
        raise ValueError("no signing key")
    kid, secret = keyring[0]
    issued = int(time.time() if now is None else now)
    # Payload's fields as a plain dict (what _signed_part serialises), built directly:
    # submit signs every file, and dataclasses.asdict costs more than the HMAC.
    body: dict[str, object] = {
        "job_id": job_id, "file": file, "email": email, "kid": kid, "iat": issued, "v": VERSION,
    }  # fmt: skip
    if content is not None:
        body["sha256"] = hashlib.sha256(content).hexdigest()
        body["length"] = len(content)
    body["sig"] = _mac(secret, _canonical(body))
    if content is None:
        return _canonical(body)
    return b"".join((_canonical(body), b"\n", content))


def _canonical(body: dict[str, object]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode(
    data: bytes, *, keyring: Keyring, ttl_seconds: float, now: float | None = None
) -> Payload:
    """Verify before anything else; raise PayloadRejected with a reason safe to log."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadRejected(f"payload of {len(data)} bytes is over {MAX_PAYLOAD_BYTES}")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadRejected("payload is not signed JSON (a legacy or foreign job)") from e
    if not isinstance(body, dict):
        raise PayloadRejected("payload is not a JSON object")
    sig = body.pop("sig", None)
    if not isinstance(sig, str):
        raise PayloadRejected("payload is unsigned")
    try:
        payload = Payload(**body)
    except TypeError as e:
        raise PayloadRejected("payload has unexpected or missing fields") from e
    if not all(isinstance(getattr(payload, f), str) for f in ("job_id", "file", "email", "kid")):
        raise PayloadRejected("payload fields have the wrong types")
    if not isinstance(payload.iat, int) or payload.v != VERSION:
        raise PayloadRejected("payload has an unknown version or issue time")
    if (payload.sha256 is None) != (payload.length is None) or not (
        payload.length is None
        or (type(payload.length) is int and payload.length >= 0 and _is_sha256(payload.sha256))
    ):
        raise PayloadRejected("payload's inline fields (sha256, length) are malformed")
    secret = dict(keyring).get(payload.kid)
    if secret is None:
        raise PayloadRejected(f"payload signed with unknown key id {payload.kid[:32]!r}")
    if not hmac.compare_digest(_mac(secret, payload._signed_part()), sig):
        raise PayloadRejected("payload signature does not match (tampered or wrong key)")
    current = time.time() if now is None else now
    if payload.iat > current + CLOCK_SKEW_SECONDS:
        raise PayloadRejected("payload issued in the future (clock skew or forgery)")
    if current - payload.iat > ttl_seconds:
        raise PayloadRejected(f"payload expired (issued {int(current - payload.iat)} s ago)")
    return payload


def decode_job(
    data: bytes, *, keyring: Keyring, ttl_seconds: float, now: float | None = None
) -> Job:
    """Verify a job as it came from gearmand, an inline job's bytes included.

    The header is verified first; then the bytes must have the signed length and sha256,
    so nothing parses bytes that were changed or cut after signing.
    """
    newline = data.find(b"\n", 0, MAX_PAYLOAD_BYTES + 1)
    header = data if newline < 0 else data[:newline]
    payload = decode(header, keyring=keyring, ttl_seconds=ttl_seconds, now=now)
    if newline < 0:
        if payload.inline:
            raise PayloadRejected("inline job without its bytes (no newline after the header)")
        return Job(payload)
    if not payload.inline:
        raise PayloadRejected("bytes follow a header that announces none (no sha256, length)")
    content = memoryview(data)[newline + 1 :]
    if len(content) != payload.length:
        raise PayloadRejected(
            f"inline bytes are {len(content)} long, the signed header says {payload.length}"
        )
    if not hmac.compare_digest(hashlib.sha256(content).hexdigest(), payload.sha256 or ""):
        raise PayloadRejected("inline bytes do not match the signed sha256 (changed in transit)")
    return Job(payload, content)


def _is_sha256(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def fingerprint(secret: bytes) -> str:
    """A key's public fingerprint: an HMAC of a fixed label, from which no secret follows."""
    return _mac(secret, b"importer signing key fingerprint")[:16]


def worker_id(owner: str, keyring: Keyring) -> str:
    """The client id our workers give gearmand: `owner~mac`, so `doctor` can tell ours apart.

    An id copied from an open gearmand's `workers` list can be replayed; the check still
    finds every worker started without our keys.
    """
    kid, secret = keyring[0]
    return f"{owner}~{_mac(secret, b'worker:' + owner.encode())[:16]}"


def is_our_worker(client_id: str, keyring: Keyring) -> bool:
    owner, sep, mac = client_id.rpartition("~")
    if not sep:
        return False
    return any(
        hmac.compare_digest(_mac(secret, b"worker:" + owner.encode())[:16], mac)
        for _, secret in keyring
    )

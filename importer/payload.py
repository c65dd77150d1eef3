"""The job payload: the one module both the submitter and the worker import.

The classic PHP import job sent ``"file||:||email"`` in clear; ours is the same two
facts made explicit, plus what a worker needs to refuse a forged or replayed job.
Example (one line on the wire)::

    {"v": 1, "job_id": "j-8c1f...", "file": "/data/in/a.pdf", "email": "ops@example.com",
     "kid": "k1", "iat": 1795824000, "sig": "3q2+7w..."}

``sig`` is HMAC-SHA256, keyed by the secret named ``kid``, over the canonical JSON of
every other field (sorted keys, no spaces).
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

    def _signed_part(self) -> bytes:
        return _canonical(asdict(self))


def _mac(secret: bytes, message: bytes) -> str:
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def encode(
    job_id: str, file: str, email: str, *, keyring: Keyring, now: float | None = None
) -> bytes:
    """Sign with the newest key (the first of the ring)."""
    if not keyring:
        raise ValueError("no signing key")
    kid, secret = keyring[0]
    issued = int(time.time() if now is None else now)
    # Payload's fields as a plain dict (what _signed_part serialises), built directly:
    # submit signs every file, and dataclasses.asdict costs more than the HMAC.
    body: dict[str, object] = {
        "job_id": job_id, "file": file, "email": email, "kid": kid, "iat": issued, "v": VERSION,
    }  # fmt: skip
    body["sig"] = _mac(secret, _canonical(body))
    return _canonical(body)


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

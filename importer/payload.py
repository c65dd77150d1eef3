"""The job payload: the one module both the submitter and the worker import.

The classic PHP import job sent ``"file||:||email"`` in clear; ours carries the same two
facts sealed, plus what a worker needs to refuse a forged or replayed job. Whoever takes
a job off gearmand without the fleet's key (a rogue worker, even on loopback) learns its
job id and issue time, and nothing that names the file, the e-mail or the content.

A job is one header line in clear, a newline, then the sealed part (bytes)::

    {"iat":1795824000,"job_id":"j-8c1f...","kid":"k1","sig":"3q2+7w...","v":2}
    <12-byte nonce><AES-256-GCM ciphertext><16-byte tag>

``sig`` is HMAC-SHA256, keyed by the secret named ``kid``, over the canonical JSON (sorted
keys, no spaces) of the header's other fields: the worker checks it, the key id and the
issue time before it decrypts a byte. The sealed part is AES-256-GCM with a random nonce,
keyed by HKDF-SHA256 of the same secret (no salt, `ENCRYPTION_INFO` as info), its
associated data the header line byte for byte: a sealed part moved under another job's
header does not open. Its plaintext is the private fields' canonical JSON::

    {"email":"ops@example.com","file":"/data/in/a.pdf"}

and, for an inline job (``submit --inline``, for workers that cannot see the submitter's
disk), a newline and the file's bytes after it::

    {"email":"ops@example.com","file":"/data/in/a.pdf"}\\n%PDF-1.7...

A job from another client (its job id one the database does not know, `workers.foreign`)
may add, together, the batch it belongs to and how many documents that batch holds::

    {"batch":"scans-1207","batch_size":3,"email":"ops@example.com","file":"/data/in/a.pdf"}

A PHP client (`examples/php/submit.php`; the wire format in the README, "Submitting from
other languages") does the same with ``hash_hmac('sha256', ...)``, ``hash_hkdf('sha256', $secret,
32, ENCRYPTION_INFO)`` and ``openssl_encrypt(..., 'aes-256-gcm', ..., OPENSSL_RAW_DATA,
$nonce, $tag, $header)``. Version 1 payloads (file and e-mail in clear) are refused.

MAX_PAYLOAD_BYTES bounds the header and the private fields; `max_job_bytes` the whole job.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from importer.errors import PayloadRejected

VERSION = 2
MAX_PAYLOAD_BYTES = 16 * 1024
CLOCK_SKEW_SECONDS = 300
ENCRYPTION_INFO = b"importer job payload encryption v2"
NONCE_BYTES = 12
TAG_BYTES = 16
_BLOCK = 16  # update_into wants room for one AES block more than it is given
_HEADER_FIELDS = {"v", "job_id", "kid", "iat"}
_PRIVATE_FIELDS = {"file", "email"}
_BATCH_FIELDS = {"batch", "batch_size"}  # optional, together: a job from another client

Keyring = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Payload:
    """A verified job's facts: the clear header's and the sealed private fields."""

    job_id: str
    file: str
    email: str
    kid: str = ""
    iat: int = 0
    v: int = VERSION
    length: int | None = None  # inline jobs only: how many bytes the job carries
    batch: str | None = None  # a job from another client: the batch it names...
    batch_size: int | None = None  # ...and how many documents that batch holds

    @property
    def inline(self) -> bool:
        return self.length is not None


@dataclass(frozen=True)
class Job:
    """A verified job: its payload and, for an inline job, its bytes (decrypted and
    authenticated; a view into the one plaintext buffer, not a further copy)."""

    payload: Payload
    content: memoryview | None = None


def max_job_bytes(max_inline_bytes: int) -> int:
    """The largest job a worker can accept: header, newline, nonce, private fields,
    newline, the largest inline file (IMPORTER_MAX_INLINE_MB), tag."""
    return 2 * (MAX_PAYLOAD_BYTES + 1) + NONCE_BYTES + max_inline_bytes + TAG_BYTES


def _mac(secret: bytes, message: bytes) -> str:
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@functools.lru_cache(maxsize=16)
def _encryption_key(secret: bytes) -> bytes:
    """The AES key of a fleet secret: HKDF with its own label, so it is never the HMAC key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=ENCRYPTION_INFO).derive(
        secret
    )


def _canonical(body: dict[str, object]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def encode(
    job_id: str,
    file: str,
    email: str,
    *,
    keyring: Keyring,
    now: float | None = None,
    content: bytes | None = None,
    batch: tuple[str, int] | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Sign and seal with the newest key (the first of the ring); with `content`, an
    inline job; with `batch` (name, size), the batch fields another client sends. Holds
    one ciphertext of `content` besides the job it returns. `nonce` is for the README's
    worked example; left out, every job gets a fresh random one, as it must."""
    if not keyring:
        raise ValueError("no signing key")
    kid, secret = keyring[0]
    clear: dict[str, object] = {
        "iat": int(time.time() if now is None else now), "job_id": job_id, "kid": kid,
        "v": VERSION,
    }  # fmt: skip
    clear["sig"] = _mac(secret, _canonical(clear))
    header = _canonical(clear)
    nonce = secrets.token_bytes(NONCE_BYTES) if nonce is None else nonce
    sealer = Cipher(algorithms.AES(_encryption_key(secret)), modes.GCM(nonce)).encryptor()
    sealer.authenticate_additional_data(header)
    fields: dict[str, object] = {"email": email, "file": file}
    if batch is not None:
        fields.update(batch=batch[0], batch_size=batch[1])
    private = _canonical(fields)
    parts = [header, b"\n", nonce, sealer.update(private)]
    if content is not None:
        parts += [sealer.update(b"\n"), sealer.update(content)]
    parts.append(sealer.finalize())
    parts.append(sealer.tag)
    return b"".join(parts)


def decode(
    data: bytes, *, keyring: Keyring, ttl_seconds: float, now: float | None = None
) -> Payload:
    """A job's payload, verified (`decode_job`), without its inline bytes."""
    return decode_job(data, keyring=keyring, ttl_seconds=ttl_seconds, now=now).payload


def decode_job(
    data: bytes, *, keyring: Keyring, ttl_seconds: float, now: float | None = None
) -> Job:
    """Verify a job as it came from gearmand; raise PayloadRejected with a reason safe to log.

    The clear header is verified first (bounded, cheap: a forgery costs no decryption),
    then the sealed part is opened; nothing reads a decrypted byte that failed its tag.
    """
    newline = data.find(b"\n", 0, MAX_PAYLOAD_BYTES + 1)
    header = data if newline < 0 else data[:newline]
    clear, secret = _verify_header(header, keyring, ttl_seconds, now)
    if newline < 0:
        raise PayloadRejected("payload has no sealed part (nothing after the header)")
    plain = _open(memoryview(data)[newline + 1 :], secret, header, clear["kid"])
    end = plain.find(b"\n", 0, MAX_PAYLOAD_BYTES + 1)
    private = _private_fields(plain if end < 0 else plain[:end])
    content = None if end < 0 else memoryview(plain)[end + 1 :]
    payload = Payload(
        job_id=clear["job_id"],
        file=private["file"],
        email=private["email"],
        kid=clear["kid"],
        iat=clear["iat"],
        length=None if content is None else len(content),
        batch=private.get("batch"),
        batch_size=private.get("batch_size"),
    )
    return Job(payload, content)


def _verify_header(
    header: bytes, keyring: Keyring, ttl_seconds: float, now: float | None
) -> tuple[dict[str, Any], bytes]:
    """The header's fields and its key's secret, once version, fields, signature and age pass."""
    if len(header) > MAX_PAYLOAD_BYTES:
        raise PayloadRejected(f"payload of {len(header)} bytes is over {MAX_PAYLOAD_BYTES}")
    try:
        body = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadRejected("payload is not signed JSON (a legacy or foreign job)") from e
    if not isinstance(body, dict):
        raise PayloadRejected("payload is not a JSON object")
    if body.get("v") == 1:
        raise PayloadRejected(
            "payload version 1 (file and e-mail in clear) is no longer accepted: submit it"
            f" again with this importer (payload version {VERSION}, sealed)"
        )
    sig = body.pop("sig", None)
    if not isinstance(sig, str):
        raise PayloadRejected("payload is unsigned")
    if body.keys() != _HEADER_FIELDS:
        raise PayloadRejected("payload has unexpected or missing fields")
    if not all(isinstance(body[f], str) for f in ("job_id", "kid")):
        raise PayloadRejected("payload fields have the wrong types")
    if type(body["iat"]) is not int or body["v"] != VERSION:
        raise PayloadRejected("payload has an unknown version or issue time")
    kid: str = body["kid"]
    secret = dict(keyring).get(kid)
    if secret is None:
        raise PayloadRejected(f"payload signed with unknown key id {kid[:32]!r}")
    if not hmac.compare_digest(_mac(secret, _canonical(body)), sig):
        raise PayloadRejected("payload signature does not match (tampered or wrong key)")
    current = time.time() if now is None else now
    if body["iat"] > current + CLOCK_SKEW_SECONDS:
        raise PayloadRejected("payload issued in the future (clock skew or forgery)")
    if current - body["iat"] > ttl_seconds:
        raise PayloadRejected(f"payload expired (issued {int(current - body['iat'])} s ago)")
    return body, secret


def _open(sealed: memoryview, secret: bytes, header: bytes, kid: str) -> bytearray:
    """The sealed part's plaintext, written once into a buffer of its own."""
    size = len(sealed) - NONCE_BYTES - TAG_BYTES
    if size < 0:
        raise PayloadRejected("payload's sealed part is too short to hold a nonce and a tag")
    nonce, tag = bytes(sealed[:NONCE_BYTES]), bytes(sealed[NONCE_BYTES + size :])
    opener = Cipher(algorithms.AES(_encryption_key(secret)), modes.GCM(nonce, tag)).decryptor()
    opener.authenticate_additional_data(header)
    plain = bytearray(size + _BLOCK - 1)
    opener.update_into(sealed[NONCE_BYTES : NONCE_BYTES + size], plain)
    try:
        opener.finalize()
    except InvalidTag as e:
        raise PayloadRejected(
            f"payload's sealed part does not open with key {kid[:32]!r} (changed in transit,"
            " or moved from another job)"
        ) from e
    del plain[size:]
    return plain


def _private_fields(data: bytearray) -> dict[str, Any]:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadRejected(f"payload's sealed fields are over {MAX_PAYLOAD_BYTES} bytes")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadRejected("payload's sealed fields are not JSON") from e
    if not isinstance(body, dict) or body.keys() not in (
        _PRIVATE_FIELDS,
        _PRIVATE_FIELDS | _BATCH_FIELDS,
    ):
        raise PayloadRejected(
            "payload's sealed fields are not exactly file and email (and, together, batch"
            " and batch_size)"
        )
    if not all(isinstance(value, str) for key, value in body.items() if key != "batch_size"):
        raise PayloadRejected("payload's sealed fields have the wrong types")
    if "batch_size" in body and type(body["batch_size"]) is not int:
        raise PayloadRejected("payload's sealed batch_size is not an integer")
    return body


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

"""`payload.decode_job` on its own: each check refuses exactly what it is for, with its reason.

The forgeries carry a real-looking job id, path and e-mail, so that nothing but the check
under test can refuse them.
"""

from __future__ import annotations

import base64
import json

import pytest

from importer import payload
from importer.errors import PayloadRejected

RING = [("k2", b"s" * 32), ("k1", b"o" * 32)]
NOW = 1_800_000_000.0
TTL = 3600
JOB = ("j-0123456789abcdef01234567", "/data/in/a.pdf", "ops@example.com")


def signed(
    *, ring: payload.Keyring = RING, now: float = NOW, content: bytes | None = None
) -> bytes:
    return payload.encode(*JOB, keyring=ring, now=now, content=content)


def decode(data: bytes, *, now: float = NOW) -> payload.Job:
    return payload.decode_job(data, keyring=RING, ttl_seconds=TTL, now=now)


def refused(data: bytes, *, now: float = NOW) -> str:
    with pytest.raises(PayloadRejected) as caught:
        decode(data, now=now)
    return caught.value.message


def split(data: bytes) -> tuple[dict[str, object], bytes]:
    header, _, sealed = data.partition(b"\n")
    return json.loads(header), sealed


def join(header: dict[str, object], sealed: bytes) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + sealed


def test_a_signed_payload_round_trips() -> None:
    job = decode(signed())
    assert (job.payload.job_id, job.payload.file, job.payload.email) == JOB
    assert job.payload.kid == "k2" and job.payload.iat == int(NOW) and job.content is None
    inline = decode(signed(content=b"%PDF-1.7\n\0\xff"))
    assert inline.content is not None and bytes(inline.content) == b"%PDF-1.7\n\0\xff"
    assert inline.payload.length == 11 and inline.payload.file == JOB[1]


def test_the_header_is_all_that_is_clear() -> None:
    data = signed(content=b"%PDF-1.7 the bytes")
    header, sealed = split(data)
    assert set(header) == {"v", "job_id", "kid", "iat", "sig"} and header["v"] == 2
    for private in (b"/data/in/a.pdf", b"ops@example.com", b"%PDF", b"the bytes"):
        assert private not in data
    plain = b'{"email":"ops@example.com","file":"/data/in/a.pdf"}\n%PDF-1.7 the bytes'
    assert len(sealed) == payload.NONCE_BYTES + len(plain) + payload.TAG_BYTES


def test_an_older_key_of_the_ring_still_verifies() -> None:
    assert decode(signed(ring=RING[1:])).payload.kid == "k1"


def test_a_bad_signature_is_refused() -> None:
    forged = signed(ring=[("k2", b"x" * 32)])  # the right key id, another secret
    assert "signature does not match" in refused(forged)


def test_an_unknown_key_id_is_refused() -> None:
    assert "unknown key id 'k9'" in refused(signed(ring=[("k9", b"s" * 32)]))


@pytest.mark.parametrize(("field", "value"), [("job_id", "j-other"), ("iat", 1), ("kid", "k1")])
def test_a_header_field_changed_after_signing_is_refused(field: str, value: object) -> None:
    header, sealed = split(signed())
    header[field] = value
    assert "signature does not match" in refused(join(header, sealed))


@pytest.mark.parametrize("offset", [0, payload.NONCE_BYTES, -1])  # nonce, ciphertext, tag
def test_a_sealed_byte_changed_in_transit_is_refused(offset: int) -> None:
    data = bytearray(signed(content=b"%PDF-1.7"))
    data[data.index(b"\n") + 1 + offset if offset >= 0 else offset] ^= 1
    assert "does not open" in refused(bytes(data))


def test_a_sealed_part_moved_under_another_jobs_header_does_not_open() -> None:
    """Both headers are genuine; only the associated data ties each sealed part to its own."""
    victim = ("j-victim", "/data/in/secret.pdf", "boss@example.com")
    theirs = payload.encode(*victim, keyring=RING, now=NOW)
    mine = signed()
    moved = mine.partition(b"\n")[0] + b"\n" + theirs.partition(b"\n")[2]
    assert "does not open" in refused(moved)


def test_an_expired_payload_is_refused() -> None:
    assert "expired" in refused(signed(now=NOW - TTL - 1))
    assert decode(signed(now=NOW - TTL + 1)).payload.job_id == JOB[0]


def test_a_payload_from_the_future_is_refused() -> None:
    ahead = payload.CLOCK_SKEW_SECONDS + 5
    assert "issued in the future" in refused(signed(now=NOW + ahead))
    assert decode(signed(now=NOW + payload.CLOCK_SKEW_SECONDS - 5)).payload.job_id == JOB[0]


def v1(job_id: str, file: str, email: str, secret: bytes) -> bytes:
    """A job as the first version signed it, file and e-mail in clear, with a real key."""
    body = {"email": email, "file": file, "iat": int(NOW), "job_id": job_id, "kid": "k2", "v": 1}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["sig"] = payload._mac(secret, canonical)
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def test_a_version_1_payload_is_refused_with_its_reason() -> None:
    old = v1(*JOB, RING[0][1])
    reason = refused(old)
    assert "version 1 (file and e-mail in clear) is no longer accepted" in reason
    assert "version 1" in refused(old + b"\n%PDF-1.7")  # a v1 inline job likewise


def test_unsigned_and_malformed_payloads_are_refused() -> None:
    header, sealed = split(signed())
    del header["sig"]
    assert "unsigned" in refused(join(header, sealed))
    assert "not signed JSON" in refused(b"/data/in/a.pdf||:||ops@example.com")
    assert "not a JSON object" in refused(b"[1, 2]")
    assert "over" in refused(b" " * (payload.MAX_PAYLOAD_BYTES + 1))
    assert "no sealed part" in refused(signed().partition(b"\n")[0])
    assert "too short" in refused(signed()[: -payload.TAG_BYTES - 40])
    extra, sealed = split(signed())
    extra["file"] = "/data/in/a.pdf"
    assert "unexpected or missing fields" in refused(join(extra, sealed))
    typed, sealed = split(signed())
    typed["job_id"] = ["j-1"]
    assert "wrong types" in refused(join(typed, sealed))
    version, sealed = split(signed())
    version["v"] = 3
    assert "unknown version" in refused(join(version, sealed))


def test_the_largest_legal_job_is_within_the_bound() -> None:
    biggest = b"\0" * (2**20)
    long_path = "/data/in/" + "p" * 4000 + ".pdf"
    email = "a" * 64 + "@" + "b" * 180 + ".example"
    data = payload.encode("j-" + "0" * 62, long_path, email, keyring=RING, now=NOW, content=biggest)
    assert len(data) <= payload.max_job_bytes(2**20)
    assert decode(data).content == biggest


def test_a_job_made_the_way_a_php_client_would_opens() -> None:
    """RFC 5869 HKDF by hand (PHP's hash_hkdf with no salt) and one-shot AES-256-GCM with
    the header line as associated data (openssl_encrypt): the worker opens it."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    secret = RING[0][1]
    prk = hmac.new(b"\0" * 32, secret, hashlib.sha256).digest()
    key = hmac.new(prk, payload.ENCRYPTION_INFO + b"\x01", hashlib.sha256).digest()
    assert key != secret
    clear = {"iat": int(NOW), "job_id": JOB[0], "kid": "k2", "v": 2}
    canonical = json.dumps(clear, sort_keys=True, separators=(",", ":")).encode()
    sig = base64.urlsafe_b64encode(hmac.new(secret, canonical, hashlib.sha256).digest())
    signed_clear = {**clear, "sig": sig.decode().rstrip("=")}
    header = json.dumps(signed_clear, sort_keys=True, separators=(",", ":")).encode()
    nonce = b"\x07" * 12
    plain = b'{"email":"ops@example.com","file":"/data/in/a.pdf"}\n%PDF-1.7'
    data = header + b"\n" + nonce + AESGCM(key).encrypt(nonce, plain, header)
    job = decode(data)
    assert (job.payload.job_id, job.payload.file, job.payload.email) == JOB
    assert job.content == b"%PDF-1.7"


def test_the_batch_fields_of_another_clients_job_round_trip() -> None:
    data = payload.encode(*JOB, keyring=RING, now=NOW, batch=("scans-1207", 3))
    job = decode(data).payload
    assert (job.batch, job.batch_size, job.file) == ("scans-1207", 3, JOB[1])
    assert decode(signed()).payload.batch is None


def resealed(private: dict[str, object]) -> bytes:
    """A real header over sealed fields of our choosing, sealed with the real key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = signed().partition(b"\n")[0]
    nonce = b"\x01" * payload.NONCE_BYTES
    plain = json.dumps(private).encode()
    key = payload._encryption_key(RING[0][1])
    return header + b"\n" + nonce + AESGCM(key).encrypt(nonce, plain, header)


@pytest.mark.parametrize(
    ("private", "reason"),
    [
        ({"file": "/a.pdf", "email": "a@b.c", "batch": "x"}, "not exactly file and email"),
        ({"file": "/a.pdf", "email": "a@b.c", "batch_size": 2}, "not exactly file and email"),
        ({"file": "/a.pdf", "email": "a@b.c", "lang": "deu"}, "not exactly file and email"),
        ({"file": "/a.pdf", "email": "a@b.c", "batch": 7, "batch_size": 2}, "wrong types"),
        ({"file": "/a.pdf", "email": "a@b.c", "batch": "x", "batch_size": "2"}, "not an integer"),
        ({"file": "/a.pdf", "email": "a@b.c", "batch": "x", "batch_size": True}, "not an integer"),
        ({"file": "/a.pdf", "email": "a@b.c", "batch": "x", "batch_size": 2.0}, "not an integer"),
    ],
)
def test_sealed_batch_fields_must_come_together_and_typed(
    private: dict[str, object], reason: str
) -> None:
    assert reason in refused(resealed(private))
    ok = {"file": "/a.pdf", "email": "a@b.c", "batch": "x", "batch_size": 2}
    assert decode(resealed(ok)).payload.batch_size == 2

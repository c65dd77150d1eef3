"""`payload.decode` on its own: each check refuses exactly what it is for, with its reason.

The forgeries carry a real-looking job id, path and e-mail, so that nothing but the check
under test can refuse them.
"""

from __future__ import annotations

import json

import pytest

from importer import payload
from importer.errors import PayloadRejected

RING = [("k2", b"s" * 32), ("k1", b"o" * 32)]
NOW = 1_800_000_000.0
TTL = 3600
JOB = ("j-0123456789abcdef01234567", "/data/in/a.pdf", "ops@example.com")


def signed(*, ring: payload.Keyring = RING, now: float = NOW) -> bytes:
    return payload.encode(*JOB, keyring=ring, now=now)


def decode(data: bytes, *, now: float = NOW) -> payload.Payload:
    return payload.decode(data, keyring=RING, ttl_seconds=TTL, now=now)


def refused(data: bytes, *, now: float = NOW) -> str:
    with pytest.raises(PayloadRejected) as caught:
        decode(data, now=now)
    return caught.value.message


def test_a_signed_payload_round_trips() -> None:
    job = decode(signed())
    assert (job.job_id, job.file, job.email) == JOB
    assert job.kid == "k2" and job.iat == int(NOW)


def test_an_older_key_of_the_ring_still_verifies() -> None:
    assert decode(signed(ring=RING[1:])).kid == "k1"


def test_a_bad_signature_is_refused() -> None:
    forged = signed(ring=[("k2", b"x" * 32)])  # the right key id, another secret
    assert "signature does not match" in refused(forged)


def test_an_unknown_key_id_is_refused() -> None:
    assert "unknown key id 'k9'" in refused(signed(ring=[("k9", b"s" * 32)]))


@pytest.mark.parametrize(
    ("field", "value"),
    [("file", "/etc/passwd"), ("email", "thief@example.com"), ("job_id", "j-other"), ("iat", 1)],
)
def test_a_field_changed_after_signing_is_refused(field: str, value: object) -> None:
    body = json.loads(signed())
    body[field] = value
    assert "signature does not match" in refused(json.dumps(body).encode())


def test_an_expired_payload_is_refused() -> None:
    assert "expired" in refused(signed(now=NOW - TTL - 1))
    assert decode(signed(now=NOW - TTL + 1)).job_id == JOB[0]


def test_a_payload_from_the_future_is_refused() -> None:
    ahead = payload.CLOCK_SKEW_SECONDS + 5
    assert "issued in the future" in refused(signed(now=NOW + ahead))
    assert decode(signed(now=NOW + payload.CLOCK_SKEW_SECONDS - 5)).job_id == JOB[0]


def test_unsigned_and_malformed_payloads_are_refused() -> None:
    body = json.loads(signed())
    del body["sig"]
    assert "unsigned" in refused(json.dumps(body).encode())
    assert "not signed JSON" in refused(b"/data/in/a.pdf||:||ops@example.com")
    assert "not a JSON object" in refused(b"[1, 2]")
    assert "over" in refused(b" " * (payload.MAX_PAYLOAD_BYTES + 1))
    extra = json.loads(signed())
    extra["priority"] = "high"
    assert "unexpected or missing fields" in refused(json.dumps(extra).encode())
    typed = json.loads(signed())
    typed["file"] = ["/data/in/a.pdf"]
    assert "wrong types" in refused(json.dumps(typed).encode())
    version = json.loads(signed())
    version["v"] = 2
    assert "unknown version" in refused(json.dumps(version).encode())

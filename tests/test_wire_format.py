"""The README's worked example of a job ("Submitting from other languages") is what
`importer/payload.py` makes from the same key, time, job id, fields and nonce, byte for
byte, and what a worker opens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from importer import payload
from tests.conftest import ROOT


def example() -> tuple[dict[str, str], str]:
    """The example's named values, and the README text around them."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Submitting from other languages", 1)[1].split("\n## ", 1)[0]
    block = section.split("**A worked example**", 1)[1].split("```text\n", 1)[1]
    lines = block.split("```", 1)[0].splitlines()
    return dict(line.split(maxsplit=1) for line in lines), section


def test_the_worked_example_is_what_payload_makes_byte_for_byte() -> None:
    values, section = example()
    secret = values["secret"].encode()
    private = json.loads(values["private"])
    nonce = bytes.fromhex(values["nonce"])
    job = payload.encode(
        values["job_id"],
        private["file"],
        private["email"],
        keyring=[(values["kid"], secret)],
        now=int(values["iat"]),
        batch=(private["batch"], private["batch_size"]),
        nonce=nonce,
    )
    sealed = nonce + bytes.fromhex(values["ciphertext"]) + bytes.fromhex(values["tag"])
    header = values["header"].encode()
    assert job == header + b"\n" + sealed
    assert f"`tag`: {len(job)} bytes" in " ".join(section.split())

    # each intermediate value, as the text describes it
    fields = json.loads(header)
    sig = fields.pop("sig")
    assert sig == values["sig"]
    assert json.dumps(fields, sort_keys=True, separators=(",", ":")) == values["signed"]
    mac = hmac.new(secret, values["signed"].encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64encode(mac).decode().rstrip("=") == sig
    key = HKDF(hashes.SHA256(), 32, salt=None, info=payload.ENCRYPTION_INFO).derive(secret)
    assert key.hex() == values["key"]
    assert AESGCM(key).decrypt(nonce, sealed[12:], header) == values["private"].encode()

    opened = payload.decode(job, keyring=[("k1", secret)], ttl_seconds=60, now=int(values["iat"]))
    assert (opened.job_id, opened.file, opened.batch, opened.batch_size) == (
        "php-0001",
        "/srv/scans/a.pdf",
        "scans-1207",
        2,
    )


def test_the_readme_names_every_field_payload_accepts() -> None:
    _, section = example()
    named = set(re.findall(r"^\| `(\w+)`", section, re.M))
    named |= set(re.findall(r"^\| `\w+`, `(\w+)`", section, re.M))
    fields = payload._HEADER_FIELDS | {"sig"} | payload._PRIVATE_FIELDS | payload._BATCH_FIELDS
    assert named == fields

"""The private CA: what it signs, where it writes, and what it refuses to overwrite."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from importer import certs
from importer.certs import init_ca_dir, issue_client
from importer.errors import BadInput


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away, so only the mode given to open() protects keys."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_init_writes_ca_server_and_client(tmp_path: Path) -> None:
    paths = init_ca_dir(tmp_path / "tls")
    assert all(p.is_file() for p in paths.files())
    ca = load(paths.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert str(paths) == "ca.pem, ca.key, server.pem, server.key, client.pem, client.key"

    server = load(paths.server_cert)
    client = load(paths.client_cert)
    assert server.issuer == ca.subject and client.issuer == ca.subject
    server_eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    client_eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(server_eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert list(client_eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_server_certificate_names_localhost_and_loopback_and_given_hosts(tmp_path: Path) -> None:
    paths = init_ca_dir(tmp_path, hosts=["gearman.example.org", "10.0.0.5", "[::1]"])
    san = load(paths.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "gearman.example.org"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]

    # The same check a TLS client makes: chain to our CA, and the name it dialled.
    verifier = (
        PolicyBuilder()
        .store(Store([load(paths.ca_cert)]))
        .build_server_verifier(x509.DNSName("localhost"))
    )
    verifier.verify(load(paths.server_cert), [])
    by_ip = (
        PolicyBuilder()
        .store(Store([load(paths.ca_cert)]))
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    by_ip.verify(load(paths.server_cert), [])


def test_bad_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="neither an IP address nor a DNS name"):
        init_ca_dir(tmp_path, hosts=["bad host!"])
    assert not (tmp_path / "ca.pem").exists()


def test_keys_are_0600_even_with_an_open_umask(tmp_path: Path, open_umask: None) -> None:
    paths = init_ca_dir(tmp_path / "tls")
    pem, key = issue_client(paths.dir, "worker-1")
    for path in (paths.ca_key, paths.server_key, paths.client_key, key):
        assert mode(path) == 0o600, path
    for path in (paths.ca_cert, paths.server_cert, paths.client_cert, pem):
        assert mode(path) == 0o644, path
    assert mode(paths.dir) == 0o700


def test_replacing_a_world_readable_key_gives_a_0600_file(tmp_path: Path) -> None:
    """A key is never written into an existing file, whose wider mode it would inherit."""
    paths = init_ca_dir(tmp_path)
    paths.server_key.chmod(0o644)
    init_ca_dir(tmp_path, force=True)
    assert mode(paths.server_key) == 0o600


def test_init_refuses_to_overwrite_a_ca(tmp_path: Path) -> None:
    paths = init_ca_dir(tmp_path / "tls")
    before = paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()
    with pytest.raises(BadInput, match="refusing to overwrite") as info:
        init_ca_dir(paths.dir)
    assert str(paths.dir) in info.value.message
    assert "--force" in info.value.message
    assert (paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()) == before

    init_ca_dir(paths.dir, force=True)
    assert paths.ca_cert.read_bytes() != before[0]


def test_issue_client_signs_with_the_existing_ca(tmp_path: Path) -> None:
    paths = init_ca_dir(tmp_path)
    pem, key = issue_client(tmp_path, "scanner-host")
    assert (pem, key) == (tmp_path / "scanner-host.pem", tmp_path / "scanner-host.key")
    cert = load(pem)
    assert cert.issuer == load(paths.ca_cert).subject
    assert cert.subject.rfc4514_string() == "CN=scanner-host,O=importer"
    cert.verify_directly_issued_by(load(paths.ca_cert))

    with pytest.raises(BadInput, match="already exists"):
        issue_client(tmp_path, "scanner-host")


@pytest.mark.parametrize("name", ["ca", "server", "../escape", "", "a b"])
def test_issue_client_refuses_names_that_clash_or_escape(tmp_path: Path, name: str) -> None:
    init_ca_dir(tmp_path)
    with pytest.raises(BadInput, match="cannot name a client certificate"):
        issue_client(tmp_path, name)


def test_issue_client_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="importer certs init"):
        issue_client(tmp_path, "worker")


def test_validity_window_can_be_set_for_expired_certificates(tmp_path: Path) -> None:
    init_ca_dir(tmp_path)
    now = dt.datetime.now(dt.UTC)
    pem, _ = certs._issue_client(
        tmp_path,
        "old",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    assert load(pem).not_valid_after_utc < now

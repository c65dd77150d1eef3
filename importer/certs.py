"""A private CA with server and client certificates for mutual TLS in front of gearmand.

gearmand's admin protocol has no authentication, so whoever can open its port can read
and change everything. Behind stunnel with `requireCert = yes`, a certificate signed by
this CA is the only way in; the CA is the operator's own, so nobody else can issue one.

Keys are EC P-256 and are created with mode 0600 by the open() call itself: a chmod
afterwards would leave a window in which another local user could read the key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from importer.errors import BadInput

log = logging.getLogger(__name__)

DEFAULT_DAYS = 825  # the longest validity that current TLS clients accept for a leaf
DEFAULT_HOSTS = ("localhost", "127.0.0.1")  # what local clients dial; pygearman checks it
_CLOCK_SKEW = dt.timedelta(minutes=5)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_RESERVED_NAMES = frozenset({"ca", "server"})

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertPaths:
    """Where `importer certs init DIR` puts each file; also what stunnel and clients read."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    def files(self) -> list[Path]:
        return [
            self.ca_cert,
            self.ca_key,
            self.server_cert,
            self.server_key,
            self.client_cert,
            self.client_key,
        ]

    def __str__(self) -> str:
        return ", ".join(path.name for path in self.files())


def init_ca_dir(
    dir: Path,
    *,
    hosts: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> CertPaths:
    """Create a CA, a server certificate for `hosts` (plus localhost) and one client.

    An existing CA is never replaced silently: every client certificate it signed would
    stop working, so the operator must ask for that with `force`.
    """
    _check_days(days)
    paths = CertPaths(Path(dir))
    if not force and (paths.ca_cert.exists() or paths.ca_key.exists()):
        raise BadInput(
            f"{paths.dir} already holds a CA ({paths.ca_cert.name}); refusing to overwrite it, "
            "because certificates it signed would stop working: pass --force to replace it, "
            "or choose another directory"
        )
    sans = _parse_hosts([*DEFAULT_HOSTS, *hosts])
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    not_before = _now() - _CLOCK_SKEW
    not_after = not_before + dt.timedelta(days=days)

    ca_key = _new_key()
    ca_cert = _ca_certificate(ca_key, not_before=not_before, not_after=not_after)
    server_key = _new_key()
    server_cert = _leaf_certificate(
        common_name="importer gearmand",
        key=server_key,
        issuer_cert=ca_cert,
        issuer_key=ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=sans,
        not_before=not_before,
        not_after=not_after,
    )
    _write_key(paths.ca_key, ca_key)
    _write_cert(paths.ca_cert, ca_cert)
    _write_key(paths.server_key, server_key)
    _write_cert(paths.server_cert, server_cert)
    _issue_client(
        paths.dir, "client", ca=(ca_cert, ca_key), not_before=not_before, not_after=not_after
    )
    log.info("created CA, server and client certificates in %s", paths.dir)
    return paths


def issue_client(
    dir: Path, name: str, *, days: int = DEFAULT_DAYS, force: bool = False
) -> tuple[Path, Path]:
    """Sign NAME.pem / NAME.key with the CA in `dir`, one per worker host or operator.

    One certificate per machine means a lost machine can be shut out by replacing the CA
    without guessing which shared key leaked.
    """
    _check_days(days)
    not_before = _now() - _CLOCK_SKEW
    return _issue_client(
        Path(dir),
        name,
        not_before=not_before,
        not_after=not_before + dt.timedelta(days=days),
        force=force,
    )


def _issue_client(
    dir: Path,
    name: str,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    ca: tuple[x509.Certificate, Key] | None = None,
    force: bool = True,
) -> tuple[Path, Path]:
    """Issue a client certificate with an explicit validity window.

    Tests use the window to make expired and not-yet-valid certificates; `force`
    defaults to True here because init replaces its own client files with the CA.
    """
    if not _NAME.match(name) or name in _RESERVED_NAMES:
        raise BadInput(
            f"{name!r} cannot name a client certificate: use letters, digits, '.', '_' or '-' "
            "(at most 64), and not 'ca' or 'server'"
        )
    paths = CertPaths(dir)
    ca_cert, ca_key = ca if ca is not None else _load_ca(paths)
    cert_path, key_path = dir / f"{name}.pem", dir / f"{name}.key"
    if not force and (cert_path.exists() or key_path.exists()):
        raise BadInput(
            f"{cert_path} already exists: pass --force to replace it, or choose another name"
        )
    key = _new_key()
    cert = _leaf_certificate(
        common_name=name,
        key=key,
        issuer_cert=ca_cert,
        issuer_key=ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        sans=[],
        not_before=not_before,
        not_after=not_after,
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    log.info("issued client certificate %s (valid until %s)", cert_path, not_after.isoformat())
    return cert_path, key_path


# Building certificates --------------------------------------------------------------


def _ca_certificate(
    key: Key, *, not_before: dt.datetime, not_after: dt.datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "importer"),
            x509.NameAttribute(NameOID.COMMON_NAME, "importer private CA"),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    *,
    common_name: str,
    key: Key,
    issuer_cert: x509.Certificate,
    issuer_key: Key,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "importer"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(issuer_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _parse_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Turn host arguments into SAN entries: an IP address where it parses as one."""
    out: list[x509.GeneralName] = []
    for raw in hosts:
        host = raw.strip().strip("[]")
        entry: x509.GeneralName
        try:
            entry = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            labels = host.rstrip(".").split(".")
            if not host or not all(_DNS_LABEL.match(label) for label in labels):
                raise BadInput(
                    f"--host {raw!r} is neither an IP address nor a DNS name "
                    "(example: --host gearman.example.org --host 10.0.0.5)"
                ) from None
            entry = x509.DNSName(host.rstrip(".").lower())
        if entry not in out:
            out.append(entry)
    return out


# Files ------------------------------------------------------------------------------


def _load_ca(paths: CertPaths) -> tuple[x509.Certificate, Key]:
    try:
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    except FileNotFoundError as e:
        raise BadInput(
            f"{paths.dir} holds no CA ({e.filename} is missing): "
            f"create one with `importer certs init {paths.dir}`"
        ) from e
    except ValueError as e:
        raise BadInput(f"the CA in {paths.dir} cannot be read ({e}): recreate it") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BadInput(f"{paths.ca_key} is not an EC key: recreate the CA with importer certs init")
    return cert, key


def _write_key(path: Path, key: Key) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, data, mode=0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write via a fresh file created with `mode`, then rename it into place.

    A new inode is what guarantees the mode: opening an existing file keeps its old
    permissions, which may be wider than 0600.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crashed run with the same pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_days(days: int) -> None:
    if days < 1:
        raise BadInput(f"--days {days}: a certificate must be valid for at least one day")

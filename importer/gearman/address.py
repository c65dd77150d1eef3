"""Where a gearmand is: `host:port` entries, `[v6]:port` addresses, loopback, local ports.

Entries come from IMPORTER_GEARMAN_SERVERS, from our own processes (`GearmandProcess.address`)
and as pygearman host dicts, which add the client's TLS files. An IPv6 address takes
brackets when a port follows it: `[::1]:4730`.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importer.config import Settings

DEFAULT_PORT = 4730
EXAMPLE = "example: 127.0.0.1:4730 or [::1]:4730"


def split_address(entry: str, default_port: int | None = DEFAULT_PORT) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or a host alone (`host`, `[::1]`, `::1`) as (host, port).

    A host alone gets `default_port`. With `default_port=None` the port is required, and
    the last colon separates it even without brackets (`::1:4730` is ::1, port 4730).
    Raises ValueError for an entry without a host, or whose port is not 1 to 65535.
    """
    port: str | None
    if entry.startswith("["):
        host, closed, rest = entry[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r} is not host:port ({EXAMPLE})")
        port = rest[1:] if rest else None
    else:
        host, sep, port = entry.rpartition(":")
        if not sep or (":" in host and default_port is not None):
            host, port = entry, None  # a name, an IPv4 address or an unbracketed IPv6 one
    if not host or host.endswith(":") or (port is None and default_port is None):
        raise ValueError(f"{entry!r} is not host:port ({EXAMPLE})")
    if port is None:
        return host, int(default_port or DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{entry!r} is not host:port: the port must be 1 to 65535 ({EXAMPLE})")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets so the port stays readable."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host`: 127.0.0.0/8, ::1 (also IPv4-mapped) or
    the name localhost. Other names are not looked up, so they count as remote."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (for private and test gearmands)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether gearmand's bind would fail; gearmand itself retries for ~20 s before it says so."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class Server:
    """One gearmand to dial; with all three TLS files, through mutual TLS."""

    host: str
    port: int
    keyfile: str | None = None
    certfile: str | None = None
    ca_certs: str | None = None

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def tls(self) -> bool:
        return bool(self.keyfile and self.certfile and self.ca_certs)


def parse_host(entry: str | dict[str, Any]) -> Server:
    """A "host:port" string or a pygearman TLS dict as a Server."""
    if isinstance(entry, dict):
        return Server(
            host=str(entry["host"]),
            port=int(entry.get("port") or DEFAULT_PORT),
            keyfile=entry.get("keyfile"),
            certfile=entry.get("certfile"),
            ca_certs=entry.get("ca_certs"),
        )
    return Server(*split_address(entry))


def host_list(settings: Settings) -> list[str | dict[str, Any]]:
    """The configured servers in the form pygearman (and GearmanIO) take."""
    if not settings.tls:
        return [format_address(host, port) for host, port in settings.servers]
    files = {
        "keyfile": str(settings.tls_key),
        "certfile": str(settings.tls_cert),
        "ca_certs": str(settings.tls_ca),
    }
    return [{"host": host, "port": port, **files} for host, port in settings.servers]

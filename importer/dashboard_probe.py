"""Does a dashboard on this host show /metrics, without its token, beyond loopback?

`importer doctor` asks the way an outsider would: it connects to each of this host's own
addresses beyond loopback (the kernel's local routes for IPv4, /proc/net/if_inet6 for
IPv6) on the dashboard's port and sends GET /metrics without a token. The request names
127.0.0.1 in its Host header, as any client can: the dashboard's loopback guard reads that
header, which stops a web page that rebinds its own name but not a client that writes its
own headers. A 200 means whoever reaches that address reads the archive's counts (and,
through the same gate, the pages and their text).
"""

from __future__ import annotations

import http.client
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from importer.gearman.address import format_address, is_loopback

# The default of `importer dashboard --port`.
DASHBOARD_PORT = 8730
PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class Answer:
    """What `http://address:port/metrics` said to a request without a token."""

    address: str
    port: int
    status: int

    @property
    def url(self) -> str:
        return f"http://{format_address(self.address, self.port)}/metrics"


def host_addresses(proc_net: Path = Path("/proc/net")) -> list[str]:
    """This host's own addresses beyond loopback (link-local IPv6 left out: it needs an
    interface to be dialled, and a dashboard there is reachable on another address too)."""
    found: list[str] = []
    trie = proc_net / "fib_trie"
    if trie.exists():
        lines = trie.read_text().splitlines()
        for line, after in zip(lines, lines[1:], strict=False):
            if line.strip().startswith("|--") and after.split()[:3] == ["/32", "host", "LOCAL"]:
                found.append(line.split()[-1])
    inet6 = proc_net / "if_inet6"
    if inet6.exists():
        for line in inet6.read_text().splitlines():
            address = ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))
            if not address.is_link_local:
                found.append(str(address))
    return [a for a in dict.fromkeys(found) if not is_loopback(a)]


def metrics_status(address: str, port: int, timeout: float = PROBE_SECONDS) -> int | None:
    """The HTTP status of GET /metrics without a token; None when nothing answers HTTP."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Host": f"127.0.0.1:{port}"})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def probe(port: int = DASHBOARD_PORT) -> list[Answer]:
    """Every address of this host where something answered HTTP on `port`."""
    answers = []
    for address in host_addresses():
        status = metrics_status(address, port)
        if status is not None:
            answers.append(Answer(address, port, status))
    return answers

"""Each configured gearmand as the admin protocol tells it: up or down, its queue and workers.

Asked per server (not summed as `GearmanIO.admin_status` does), all at once, each on a
connection of its own with a short timeout: a dead server shows as down, with the reason,
without holding up the page. `/metrics` reads the same numbers (`importer.metrics`); the
page adds the version, every function and the connections.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from importer.config import Settings
from importer.gearman.address import Server, host_list, parse_host
from importer.gearman.admin import ask
from importer.gearman.client import FUNCTION
from importer.gearman.connection import Connection, ServerError

ADMIN_TIMEOUT = 2.0


@dataclass(frozen=True)
class FunctionLine:
    """One line of admin `status`: e.g. "import\\t12\\t2\\t4"."""

    name: str
    queued: int  # running ones included, as gearmand counts them
    running: int
    workers: int


@dataclass(frozen=True)
class ServerState:
    address: str
    tls: bool
    up: bool
    error: str | None = None
    version: str | None = None
    functions: tuple[FunctionLine, ...] = ()
    connections: int = 0  # clients and workers connected
    import_workers: int = 0  # connections that registered our function

    @property
    def queued(self) -> int:
        """Jobs waiting or running for our function."""
        return sum(f.queued for f in self.functions if f.name.encode() == FUNCTION)


def server_states(settings: Settings) -> list[ServerState]:
    """Every configured gearmand, asked at the same time."""
    servers = [parse_host(host) for host in host_list(settings)]
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        return list(pool.map(_ask, servers))


def _ask(server: Server) -> ServerState:
    try:
        conn = Connection(server, ADMIN_TIMEOUT)
    except ServerError as e:
        return ServerState(server.address, server.tls, up=False, error=str(e))
    try:
        version = ask(conn, "version")[0]
        functions = tuple(_function(line) for line in ask(conn, "status") if line.strip())
        workers = ask(conn, "workers")
    except (ServerError, ValueError) as e:
        return ServerState(server.address, server.tls, up=False, error=str(e))
    finally:
        conn.close()
    ours = sum(1 for line in workers if FUNCTION.decode() in _functions_of(line))
    return ServerState(
        server.address,
        server.tls,
        up=True,
        version=version,
        functions=functions,
        connections=len(workers),
        import_workers=ours,
    )


def _function(line: str) -> FunctionLine:
    name, queued, running, workers = line.split("\t")
    return FunctionLine(name, int(queued), int(running), int(workers))


def _functions_of(worker_line: str) -> list[str]:
    """The functions of an admin `workers` line: "FD IP CLIENT_ID : FUNCTION...\""""
    return worker_line.partition(" : ")[2].split()

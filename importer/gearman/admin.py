"""gearmand's admin text protocol (`version`, `getpid`, `status`, `workers`, `show jobs`).

A command is one line; the answer is one line ("OK …", or "ERR …") for most commands and,
for the listings, lines up to one holding a lone ".". The protocol has no authentication:
whoever reaches the port may ask, so behind stunnel it is asked through mutual TLS like
any other request.
"""

from __future__ import annotations

from importer.gearman.address import Server
from importer.gearman.connection import Connection, ServerError

# The commands whose answer is a listing ended by ".": every other answers one line.
LISTINGS = frozenset({"status", "workers", "show jobs", "show unique jobs"})


class AdminRefused(ServerError):
    """gearmand answered "ERR …": it is gearmand, and it refused the command."""


def ask(conn: Connection, command: str) -> list[str]:
    """Send one command; return a listing's lines, or a one-line answer without its "OK".

    Raises AdminRefused for "ERR …", and ServerError when the connection fails or the
    one-line answer is not gearmand's (something else listens on the port).
    """
    conn.send(command.encode() + b"\n")
    first = conn.read_line()
    if first.startswith("ERR "):
        raise AdminRefused(f"admin {command!r}: {first}")
    if command.strip() not in LISTINGS:
        if first != "OK" and not first.startswith("OK "):
            raise ServerError(f"admin {command!r}: not a gearmand answer: {first[:80]!r}")
        return [first.removeprefix("OK").strip()]
    lines = []
    line = first
    while line != ".":
        lines.append(line)
        line = conn.read_line()
    return lines


def admin_command(server: Server, command: str, *, timeout: float = 1.0) -> list[str]:
    """Ask one command on a connection of its own (mutual TLS when `server` has the files)."""
    conn = Connection(server, timeout)
    try:
        return ask(conn, command)
    finally:
        conn.close()

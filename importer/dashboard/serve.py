"""`importer dashboard`: check where it may listen, open the database read-only, serve.

Every request needs the token (`token`): off loopback the dashboard starts only with
IMPORTER_DASHBOARD_TOKEN set; on loopback without it, the data dir's token is printed in
a login URL. With --tls-cert and --tls-key (e.g.
`importer certs init DIR`'s server.pem and server.key) it serves https; off loopback
without them it warns that the token crosses the network in clear.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import uvicorn
from rich.console import Console

from importer.config import Settings
from importer.dashboard.app import build_app
from importer.dashboard.readonly import make_read_only
from importer.dashboard.token import TOKEN_FILE, token_for
from importer.db.engine import open_database
from importer.errors import BadInput
from importer.gearman.address import format_address, is_loopback


def bind(listen: str, port: int) -> socket.socket:
    """The listening socket, or BadInput naming the address that cannot be used."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            listen.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise BadInput(f"--listen {listen}: not an address of this machine ({e})") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise BadInput(
            f"cannot listen on {format_address(listen.strip('[]'), port)}: {e.strerror or e}"
            " (another program on that port? choose one with --port)"
        ) from e
    return sock


def tls_files(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """Both TLS files, or None for plain http; BadInput when only one is given, or they
    are not a certificate and its key."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = (
            ("--tls-key", "--tls-cert") if cert is None else ("--tls-cert", "--tls-key")
        )
        raise BadInput(f"{given} needs {missing} too: give both, or neither for plain http")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise BadInput(
            f"--tls-cert {cert} --tls-key {key}: not a certificate and its key ({e})"
            " (make them with `importer certs init DIR`)"
        ) from e
    return cert, key


def serve(
    settings: Settings,
    listen: str,
    port: int,
    *,
    err: Console,
    tls: tuple[Path, Path] | None = None,
) -> int:
    token = token_for(settings, listen)
    db = make_read_only(open_database(settings.resolved_database_url))
    sock = bind(listen, port)
    app = build_app(settings, db, token=token.value)
    where = format_address(listen.strip("[]"), sock.getsockname()[1])
    scheme = "https" if tls else "http"
    if token.generated:
        err.print(
            f"importer dashboard: {scheme}://{where}/ (read-only). Open it, logged in, with:\n"
            f"    {scheme}://{where}/login?token={token.value}\n"
            f"(the token is in {settings.data_dir / TOKEN_FILE}; every request needs it)",
            highlight=False,
        )
    else:
        err.print(
            f"importer dashboard: {scheme}://{where}/ (read-only, IMPORTER_DASHBOARD_TOKEN"
            " required)",
            highlight=False,
        )
    if not tls and not is_loopback(listen):
        err.print(
            f"WARNING: {where} is beyond loopback without TLS: the token and every page cross"
            " the network in clear. Use --tls-cert/--tls-key (`importer certs init DIR` makes"
            " them) or reach it through an SSH tunnel (ssh -L 8730:127.0.0.1:8730 HOST)",
            highlight=False,
        )
    config = uvicorn.Config(
        app,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=5,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        db.engine.dispose()
    return 0

"""`importer dashboard`: check where it may listen, open the database read-only, serve.

Off loopback the dashboard starts only with IMPORTER_DASHBOARD_TOKEN set: page text and
file names are not for whoever reaches the port.
"""

from __future__ import annotations

import socket

import uvicorn
from rich.console import Console

from importer.config import Settings
from importer.dashboard.app import build_app
from importer.dashboard.readonly import make_read_only
from importer.db.engine import open_database
from importer.errors import BadInput
from importer.gearman.address import format_address, is_loopback

MIN_TOKEN_CHARACTERS = 16
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def token_for(settings: Settings, listen: str) -> str | None:
    """The token requests must carry, or None for an open dashboard on loopback; BadInput
    when the address needs a token and none is set, or the token is too short."""
    secret = settings.dashboard_token
    token = secret.get_secret_value() if secret is not None else ""
    if not token and not is_loopback(listen):
        raise BadInput(
            f"--listen {listen} is beyond loopback: anyone who reaches it would read every"
            " imported page. Set IMPORTER_DASHBOARD_TOKEN (make one with"
            f" {MAKE_TOKEN}), or listen on 127.0.0.1"
        )
    if token and len(token) < MIN_TOKEN_CHARACTERS:
        raise BadInput(
            f"IMPORTER_DASHBOARD_TOKEN has {len(token)} characters: use"
            f" {MIN_TOKEN_CHARACTERS} or more (make one with {MAKE_TOKEN})"
        )
    return token or None


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


def serve(settings: Settings, listen: str, port: int, *, err: Console) -> int:
    token = token_for(settings, listen)
    db = make_read_only(open_database(settings.resolved_database_url))
    sock = bind(listen, port)
    app = build_app(settings, db, token=token)
    where = format_address(listen.strip("[]"), sock.getsockname()[1])
    guarded = "the token required" if token else "open to this machine only"
    err.print(f"importer dashboard: http://{where}/ (read-only, {guarded})", highlight=False)
    config = uvicorn.Config(
        app,
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

"""Headers and checks every response of the dashboard gets.

Without a token the dashboard answers only requests addressed to loopback (the Host
header), so a web page that rebinds its own name to 127.0.0.1 cannot read it through the
visitor's browser. Every response forbids scripts and styles from anywhere but the
dashboard itself, framing, and caching page text.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from importer.gearman.address import is_loopback

HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def host_of(host_header: str) -> str:
    """The host of a Host header: `127.0.0.1:8730` -> 127.0.0.1, `[::1]:8730` -> ::1."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


class LoopbackHostOnly:
    """Refuse (421) a request whose Host header does not name this machine's loopback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = host_of(Headers(scope=scope).get("host", ""))
            if not is_loopback(host):
                refused = PlainTextResponse(
                    f"Host {host[:100]!r} is not this machine's loopback: without"
                    " IMPORTER_DASHBOARD_TOKEN the dashboard answers only requests addressed to"
                    " 127.0.0.1, ::1 or localhost",
                    status_code=421,
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)

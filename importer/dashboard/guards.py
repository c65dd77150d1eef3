"""Headers and checks every response of the dashboard gets.

Every request needs the dashboard's token (`auth`): a web page that rebinds its own name
to 127.0.0.1 gets only the login form, as the login cookie is the dashboard's own name's.
A request a browser sends on behalf of another site (its `Sec-Fetch-Site` or `Origin`
header says so) is refused too: a page the operator visits could otherwise time searches
or make the gearmand page probe the host. curl and Prometheus send neither header. Every
response forbids scripts and styles from anywhere but the dashboard itself, framing, and
caching page text.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


SAME_SITE_FETCHES = frozenset({"same-origin", "none"})


def cross_site(scope: Scope) -> str | None:
    """Why a browser sent this request for another site, or None when it did not.

    `Sec-Fetch-Site: cross-site` -> "Sec-Fetch-Site is cross-site";
    `Origin: https://evil.example` on a request to http://127.0.0.1:8730 -> "Origin ..."."""
    headers = Headers(scope=scope)
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() not in SAME_SITE_FETCHES:
        return f"Sec-Fetch-Site is {fetch_site[:40]!r}"
    origin = headers.get("origin")
    own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
    if origin is not None and origin.strip().lower() != own:
        return f"Origin {origin[:100]!r} is not {own[:100]!r}"
    return None


class SameOriginOnly:
    """Refuse (403) a request a browser sends on behalf of another site."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reason = cross_site(scope)
            if reason is not None:
                refused = PlainTextResponse(
                    f"{reason}: the dashboard answers only its own pages, not other sites",
                    status_code=403,
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)

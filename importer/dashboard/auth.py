"""The token that guards every request of the dashboard, on loopback too.

A request carries it as `Authorization: Bearer TOKEN`, or carries the login cookie that
POST /login (the form) or GET /login?token=TOKEN (the URL printed at start, as Jupyter
prints its own) sets for the right token. The cookie is `EXPIRES.NONCE.MAC`, the MAC an
HMAC-SHA256 keyed with the token over the expiry and a random nonce: it never holds the
token, each login gets a cookie of its own, and the server refuses one past its expiry
(12 hours) whatever the browser does, or one made for another token. Comparisons are
constant-time. The cookie is `Secure` when the dashboard serves TLS (--tls-cert). Every
path but /login needs one of them: the pages, their fragments, the static files and
/metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

LOGIN_PATH = "/login"
COOKIE = "importer_dashboard"
MAX_LOGIN_BYTES = 4096
COOKIE_SECONDS = 12 * 3600
_SESSION_LABEL = b"importer dashboard session"

Refuse = Callable[[Request, str | None], Response]  # (request, message) -> the login page


def _mac(token: str, expires: int, nonce: str) -> str:
    message = b"|".join((_SESSION_LABEL, str(expires).encode(), nonce.encode()))
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def cookie_value(token: str, *, now: float | None = None) -> str:
    """A new session cookie: `1765123456.NONCE.MAC`, valid for COOKIE_SECONDS from `now`."""
    expires = int(now if now is not None else time.time()) + COOKIE_SECONDS
    nonce = secrets.token_urlsafe(16)
    return f"{expires}.{nonce}.{_mac(token, expires, nonce)}"


def valid_cookie(value: str, token: str, *, now: float | None = None) -> bool:
    """Whether the cookie was made by this dashboard, for this token, and has not expired."""
    expires, _, rest = value.partition(".")
    nonce, _, mac = rest.partition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12 and nonce and mac):
        return False
    if not _same(mac, _mac(token, int(expires), nonce)):
        return False
    left = int(expires) - (now if now is not None else time.time())
    return 0 < left <= COOKIE_SECONDS


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given and _same(given.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and valid_cookie(cookie, token)


class TokenGate:
    """ASGI middleware: a request without the token gets 401 (the login form for a browser)."""

    def __init__(self, app: ASGIApp, *, token: str, refuse: Refuse) -> None:
        self.app = app
        self.token = token
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != LOGIN_PATH:
            request = Request(scope)
            if not authorized(request, self.token):
                await self.refuse(request, None)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _logged_in(request: Request, token: str) -> Response:
    """Off to the batches, with a new session cookie: the token leaves the address bar."""
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        cookie_value(token),
        max_age=COOKIE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def login_routes(token: str, refuse: Refuse) -> list[Route]:
    async def show(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:
            if _same(given, token):
                return _logged_in(request, token)
            return refuse(request, "That is not the dashboard's token.")
        if authorized(request, token):
            return RedirectResponse("/", status_code=303)
        return refuse(request, None)

    async def login(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BYTES:
                return Response("login form too large", status_code=413)
        fields = dict(parse_qsl(body.decode("utf-8", "replace")))
        if not _same(fields.get("token", ""), token):
            return refuse(request, "That is not the dashboard's token.")
        return _logged_in(request, token)

    return [Route(LOGIN_PATH, show, methods=["GET"]), Route(LOGIN_PATH, login, methods=["POST"])]

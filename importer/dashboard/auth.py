"""The token that guards the dashboard off loopback (IMPORTER_DASHBOARD_TOKEN).

A request carries it as `Authorization: Bearer TOKEN`, or carries the login cookie that
POST /login sets for the right token. The cookie holds an HMAC of the token, not the token;
both are compared in constant time. It lasts 12 hours, and is `Secure` when the
dashboard serves TLS (--tls-cert). Every path but /login needs one of them: the pages,
their fragments, the static files and /metrics.
"""

from __future__ import annotations

import hashlib
import hmac
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


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), _SESSION_LABEL, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given and _same(given.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and _same(cookie, cookie_value(token))


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


def login_routes(token: str, refuse: Refuse) -> list[Route]:
    async def show(request: Request) -> Response:
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

    return [Route(LOGIN_PATH, show, methods=["GET"]), Route(LOGIN_PATH, login, methods=["POST"])]

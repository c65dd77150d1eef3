"""The dashboard's web application: pages, fragments, static files, guards.

    app = build_app(settings, make_read_only(open_database(url)), token=TOKEN)

It answers only requests that carry the token (`auth`), on loopback too; never a request
a browser sends for another site (`guards`). An unexpected error is a plain 500 with the
security headers, its traceback in the log only. Pages are sync functions: Starlette runs
them in its thread pool, each with its own database session.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from importer.config import Settings
from importer.dashboard import auth, guards
from importer.dashboard.formats import FILTERS
from importer.dashboard.highlight import pieces
from importer.dashboard.pace import PaceMeter
from importer.dashboard.routes import (
    archive,
    batch,
    batches,
    documents,
    failures,
    gearmand,
    metrics,
    search,
)
from importer.dashboard.state import Dashboard
from importer.db.engine import Database
from importer.errors import ImporterError, ServiceUnavailable

HERE = Path(__file__).parent
PAGES = (batches, batch, documents, archive, failures, gearmand, search, metrics)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    env.globals["pieces"] = pieces
    return Jinja2Templates(env=env)


def build_app(settings: Settings, db: Database, *, token: str) -> Starlette:
    board = Dashboard(settings, db, templates(), PaceMeter())

    def refuse(request: Request, message: str | None) -> Response:
        response = board.templates.TemplateResponse(
            request, "login.html", {"message": message}, status_code=401
        )
        response.headers["www-authenticate"] = 'Bearer realm="importer dashboard"'
        return response

    def failed(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, exc.detail
        elif isinstance(exc, OperationalError):
            status = 503
            said = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            message = f"the database {db.safe_url} did not answer: {said[0] if said else exc}"
        else:
            assert isinstance(exc, ImporterError)
            status = 503 if isinstance(exc, ServiceUnavailable) else 400
            message = exc.message
        return board.templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message}, status_code=status
        )

    def crashed(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(
            "the dashboard failed on this request: its log says why",
            status_code=500,
            headers=guards.HEADERS,
        )

    served: list[BaseRoute] = [route for module in PAGES for route in module.routes]
    served.append(Route("/favicon.ico", lambda request: Response(status_code=204)))
    served.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    served += auth.login_routes(token, refuse)
    middleware = [
        Middleware(guards.SecurityHeaders),
        Middleware(guards.SameOriginOnly),
        Middleware(auth.TokenGate, token=token, refuse=refuse),
    ]
    app = Starlette(
        routes=served,
        middleware=middleware,
        exception_handlers={
            HTTPException: failed,
            ImporterError: failed,
            OperationalError: failed,
            Exception: crashed,
        },
    )
    app.state.dashboard = board
    return app

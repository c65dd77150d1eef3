"""Failed documents of every batch, grouped by their kind, with the command that retries them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from importer.dashboard.queries import failures
from importer.dashboard.state import dashboard


def page(request: Request) -> Response:
    board = dashboard(request)
    return board.templates.TemplateResponse(request, "failures.html", {"kinds": failures(board.db)})


routes = [Route("/failures", page)]

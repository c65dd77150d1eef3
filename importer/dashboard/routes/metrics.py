"""GET /metrics: the Prometheus exposition (`importer.metrics`), behind the dashboard's token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from importer.dashboard.state import dashboard
from importer.metrics import render


def page(request: Request) -> Response:
    board = dashboard(request)
    body, content_type = render(board.settings, board.db)
    return Response(body, headers={"content-type": content_type})


routes = [Route("/metrics", page)]

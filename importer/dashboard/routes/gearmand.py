"""Each configured gearmand (up or down, queue, workers) and `importer doctor`'s exposure checks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from importer.dashboard.servers import ADMIN_TIMEOUT, server_states
from importer.dashboard.state import dashboard
from importer.doctor import check_exposure
from importer.gearman.address import host_list
from importer.gearman.client import GearmanIO


def page(request: Request) -> Response:
    board = dashboard(request)
    with GearmanIO(host_list(board.settings), timeout=ADMIN_TIMEOUT) as gio:
        exposure = check_exposure(board.settings, gio)
    return board.templates.TemplateResponse(
        request,
        "gearmand.html",
        {"servers": server_states(board.settings), "exposure": exposure},
    )


routes = [Route("/gearmand", page)]

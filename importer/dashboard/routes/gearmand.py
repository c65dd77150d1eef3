"""Each configured gearmand (up or down, queue, workers) and `importer doctor`'s exposure checks.

The exposure checks probe this host's ports: their result is reused for ten seconds, so
reloading the page cannot keep the host probing itself."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from importer.config import Settings
from importer.dashboard.servers import ADMIN_TIMEOUT, server_states
from importer.dashboard.state import dashboard
from importer.doctor import Check, check_exposure
from importer.gearman.address import host_list
from importer.gearman.client import GearmanIO


def page(request: Request) -> Response:
    board = dashboard(request)
    exposure = board.exposure.get(lambda: _exposure(board.settings))
    return board.templates.TemplateResponse(
        request,
        "gearmand.html",
        {"servers": server_states(board.settings), "exposure": exposure},
    )


def _exposure(settings: Settings) -> list[Check]:
    with GearmanIO(host_list(settings), timeout=ADMIN_TIMEOUT) as gio:
        return check_exposure(settings, gio)


routes = [Route("/gearmand", page)]

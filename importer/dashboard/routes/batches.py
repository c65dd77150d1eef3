"""The newest batches with their progress; the table is polled every two seconds."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from importer.dashboard.state import dashboard
from importer.status import overview


def _context(request: Request) -> dict[str, object]:
    board = dashboard(request)
    report = overview(board.db)
    rows = board.pace.paces(board.db, report.batches)
    return {"rows": rows, "rejected": report.rejected_jobs, "replayed": report.replayed_jobs}


def index(request: Request) -> Response:
    return dashboard(request).templates.TemplateResponse(request, "batches.html", _context(request))


def live(request: Request) -> Response:
    return dashboard(request).templates.TemplateResponse(
        request, "_batches.html", _context(request)
    )


routes = [Route("/", index), Route("/live/batches", live)]

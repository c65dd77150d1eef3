"""One document: its state and reason, and its pages' text, pages for review flagged."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from importer.dashboard.queries import document_text
from importer.dashboard.state import MAX_ID, dashboard, int_param


def page(request: Request) -> Response:
    board = dashboard(request)
    document_id = request.path_params["document_id"]
    first = int_param(request, "from") or 1
    shown = document_text(board.db, document_id, first) if document_id <= MAX_ID else None
    if shown is None:
        raise HTTPException(404, f"no document {document_id}")
    return board.templates.TemplateResponse(request, "document.html", {"shown": shown})


routes = [Route("/documents/{document_id:int}", page)]

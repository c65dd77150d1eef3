"""Full-text search over the imported pages (`importer.search`), matches marked."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from importer.dashboard.state import dashboard
from importer.errors import ImporterError
from importer.search import search

LIMIT = 20
MAX_QUERY = 500


def page(request: Request) -> Response:
    board = dashboard(request)
    query = request.query_params.get("q", "").strip()
    batch = request.query_params.get("batch", "").strip() or None
    context: dict[str, object] = {"query": query, "batch": batch, "hits": None, "problem": None}
    status = 200
    if len(query) > MAX_QUERY:
        context["problem"] = f"the query is {len(query)} characters long: {MAX_QUERY} at most"
        status = 400
    elif query:
        try:
            context["hits"] = search(board.db, query, batch_id=batch, limit=LIMIT)
        except ImporterError as e:
            context["problem"] = e.message
            status = 400
    return board.templates.TemplateResponse(request, "search.html", context, status_code=status)


routes = [Route("/search", page)]

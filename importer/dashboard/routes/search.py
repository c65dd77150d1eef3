"""Full-text search over the imported pages (`importer.search`), matches marked.

A search reads the whole index: two run at once at most, a third is told 503 at once."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from importer.dashboard.state import SEARCHES_AT_ONCE, dashboard, has_control
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
    elif batch is not None and has_control(batch):
        context["problem"] = f"batch={batch[:40]!r} holds a control character: no batch id does"
        status = 400
    elif query:
        with board.searches.taken() as ok:
            if not ok:
                return Response(
                    f"{SEARCHES_AT_ONCE} searches are running already: try again in a moment",
                    status_code=503,
                    headers={"retry-after": "2"},
                )
            try:
                context["hits"] = search(board.db, query, batch_id=batch, limit=LIMIT)
            except ImporterError as e:
                context["problem"] = e.message
                status = 400
    return board.templates.TemplateResponse(request, "search.html", context, status_code=status)


routes = [Route("/search", page)]

"""One batch: its counts and pace, and its documents a page at a time; live while it runs."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from importer.dashboard.queries import documents_page
from importer.dashboard.state import dashboard, has_control, int_param
from importer.errors import BadInput
from importer.status import overview


def _context(request: Request) -> dict[str, object]:
    board = dashboard(request)
    batch_id = request.path_params["batch_id"]
    if has_control(batch_id):
        raise HTTPException(
            404, f"no batch {batch_id[:40]!r}: a batch id holds no control character"
        )
    try:
        (batch,) = overview(board.db, batch_id).batches
    except BadInput as e:
        raise HTTPException(404, e.message) from e
    after, before = int_param(request, "after"), int_param(request, "before")
    listed = documents_page(board.db, batch_id, after=after, before=before)
    cursor = {"after": after} if after is not None else {}
    cursor |= {"before": before} if before is not None else {}
    live = f"/batches/{quote(batch_id, safe='')}/live"
    return {
        "batch": batch,
        "pace": board.pace.observe(board.db, batch),
        "listing": listed,
        "live": f"{live}?{urlencode(cursor)}" if cursor else live,
    }


def page(request: Request) -> Response:
    return dashboard(request).templates.TemplateResponse(request, "batch.html", _context(request))


def live(request: Request) -> Response:
    return dashboard(request).templates.TemplateResponse(request, "_batch.html", _context(request))


routes = [
    Route("/batches/{batch_id}", page),
    Route("/batches/{batch_id}/live", live),
]

"""A document's searchable PDF (`submit --archive`), to download, behind the token like
every page.

The path comes from the database; the file is opened as workers open documents
(`importer.opening`): no link anywhere in its path, a regular file with one name, under
its batch's archive directory. So a link planted in that directory serves nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from importer.dashboard.state import MAX_ID, dashboard
from importer.db.models import Batch, Document
from importer.opening import Refused, open_confined
from importer.states import DocStatus

CHUNK = 1 << 16


def download(request: Request) -> Response:
    board = dashboard(request)
    document_id = request.path_params["document_id"]
    row = None
    if document_id <= MAX_ID:
        with board.db.session() as s:
            row = s.execute(
                select(Document.archive, Batch.archive_dir)
                .join(Batch)
                .where(Document.id == document_id, Document.status == DocStatus.done)
            ).first()
    if row is None or not row.archive or not row.archive_dir:
        raise HTTPException(404, f"no searchable PDF for document {document_id}")
    try:
        fd = open_confined(row.archive, [Path(row.archive_dir).resolve()], None)
    except (Refused, OSError) as e:
        raise HTTPException(404, f"the searchable PDF of document {document_id} is gone") from e
    name = quote(os.path.basename(row.archive), safe="")
    return StreamingResponse(
        _chunks(fd),
        media_type="application/pdf",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{name}",
            "Content-Length": str(os.fstat(fd).st_size),
        },
    )


def _chunks(fd: int) -> Iterator[bytes]:
    try:
        while chunk := os.read(fd, CHUNK):
            yield chunk
    finally:
        os.close(fd)


routes = [Route("/documents/{document_id:int}/archive.pdf", download)]

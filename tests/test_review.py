"""Pages that need a person: marked where they are read, counted per document, listed.

A page is marked for review when OCR read it with a mean word confidence below
IMPORTER_REVIEW_CONFIDENCE or found no word on a page with ink; a blank page and a
text-layer page never are. One real import (gearmand, a worker, Tesseract) of a scanned
document (a good page, a degraded one, a blank one), a born-digital one and the failures
every import meets is shared by the checks of the marks, the counts, `status BATCH`,
`export --review` and the stable error kinds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pypdf import PdfReader, PdfWriter
from sqlalchemy import select

from importer.commands import do_retry, show_status
from importer.config import load_settings
from importer.console import SafeConsole
from importer.db import lifecycle
from importer.db.engine import Database, open_database
from importer.db.models import Batch, Document, Page, utcnow
from importer.errors import ConfigError
from importer.gearman.server import GearmandProcess
from importer.reasons import ErrorKind
from importer.review import write as export_review
from importer.states import DocStatus, PageSource
from tests import hostile
from tests.conftest import SAMPLES, importer, settings_from, submit_json
from tests.gearmand_fixture import require_gearmand
from workers import review
from workers.document import PageResult

REVIEW_BELOW = 60.0  # IMPORTER_REVIEW_CONFIDENCE's default
MAX_PAGES = 5
HOG_DPI = 150
SCANNED = "scan [bold]3[red] <b>&amp; 'x'.pdf"  # markup to Rich, HTML and a shell
SCAN_DPI = 200
SIZE = (int(5.5 * SCAN_DPI), 4 * SCAN_DPI)  # a small page: Tesseract reads it in a second
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
LINES = (
    "The quarterly report was filed on time.",
    "Shipping costs rose by four percent,",
    "while returns fell to their lowest level",
    "since the warehouse moved to the coast.",
    "Please sign and return the enclosed form.",
)


def typed(lines: tuple[str, ...] = LINES, *, ink: int = 0, paper: int = 255) -> Image.Image:
    """A page of typewritten lines, as a clean scan shows it."""
    image = Image.new("L", SIZE, paper)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, 28)
    for n, line in enumerate(lines):
        draw.text((60, 60 + 45 * n), line, font=font, fill=ink)
    return image


def degraded() -> Image.Image:
    """The same page out of focus, gray on gray: Tesseract reads it, badly."""
    return typed(ink=40, paper=220).filter(ImageFilter.GaussianBlur(3.5))


def blank(specks: int = 25, seed: int = 2) -> Image.Image:
    """A scan of white paper: a faint tone and a few specks of dust."""
    image = Image.new("L", SIZE, 250)
    draw = ImageDraw.Draw(image)
    rng = random.Random(seed)
    for _ in range(specks):
        x, y, r = rng.randrange(SIZE[0]), rng.randrange(SIZE[1]), rng.randint(1, 2)
        draw.ellipse((x, y, x + r, y + r), fill=rng.randint(0, 80))
    return image


def grainy() -> Image.Image:
    """White paper as a scanner sees it up close: every pixel a little off white."""
    return Image.eval(Image.effect_noise(SIZE, 12), lambda v: min(255, v + 122))


def scan_pages() -> list[Image.Image]:
    return [typed(), degraded(), blank()]


def write_scans(path: Path, pages: list[Image.Image]) -> Path:
    """An image-only PDF, one scan a page, at SCAN_DPI."""
    first, *rest = pages
    first.save(path, "PDF", resolution=SCAN_DPI, save_all=True, append_images=rest)
    return path


# One import: a scanned document to review, a born-digital one, and failures -------------


@dataclass(frozen=True)
class Imported:
    env: dict[str, str]
    batch: str
    db: Database
    docs: dict[str, Document]  # by file name, after the import
    pages: dict[int, Page]  # the scanned document's, by number
    requeued: dict[str, Document]  # after the missing file came back and `importer retry`
    retried: dict[str, Document]  # and after a worker read them again


def _documents(db: Database, batch: str) -> dict[str, Document]:
    with db.session() as s:
        rows = s.scalars(select(Document).where(Document.batch_id == batch)).all()
        s.expunge_all()
    return {Path(d.path).name: d for d in rows}


def _copy_of(source: Path, path: Path) -> Path:
    """The same pages with another title: another file (sha256) to import."""
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.add_metadata({"/Title": path.name})
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imported]:
    require_gearmand()
    tmp = tmp_path_factory.mktemp("review")
    inside, outside = tmp / "inbox" / "in", tmp / "inbox" / "out"
    inside.mkdir(parents=True)
    outside.mkdir()
    born = SAMPLES / "born_digital.pdf"
    write_scans(inside / SCANNED, scan_pages())
    shutil.copy(born, inside / "born.pdf")
    hostile.encrypted(inside / "encrypted.pdf", born)
    hostile.truncated(inside / "corrupt.pdf", born)
    hostile.not_a_pdf(inside / "download.pdf")
    hostile.many_pages(inside / "too-many-pages.pdf", pages=MAX_PAGES + 1)
    hostile.many_pages(outside / "outside.pdf", pages=2)
    hostile.memory_hog(inside / "memory-hog.pdf", megapixels=150, dpi=HOG_DPI)
    missing = _copy_of(born, inside / "missing.pdf")
    server = GearmandProcess(data_dir=tmp / "gearmand")
    server.start()
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
        env = {
            **base,
            "IMPORTER_DATA_DIR": str(tmp / "data"),
            "IMPORTER_GEARMAN_SERVERS": server.address,
            "IMPORTER_SECRET_KEYS": "k1:" + os.urandom(16).hex(),
            "IMPORTER_ALLOWED_ROOTS": str(tmp / "inbox"),
            "IMPORTER_MAX_PAGES": str(MAX_PAGES),
            "IMPORTER_MAX_ATTEMPTS": "1",
            "IMPORTER_CHILD_MEMORY_MB": "200",  # the memory hog's page needs more
            "IMPORTER_OCR_DPI": str(HOG_DPI),  # the scans render at theirs
        }
        batch = str(submit_json(tmp / "inbox", env)["batch_id"])
        aside = missing.rename(tmp / "missing.pdf")  # gone before a worker gets to it
        workers = {**env, "IMPORTER_ALLOWED_ROOTS": str(inside)}
        importer("worker", "--burst", env=workers, check=True, timeout=300)
        db = open_database(settings_from(env).resolved_database_url)
        docs = _documents(db, batch)
        with db.session() as s:
            rows = s.scalars(select(Page).where(Page.document_id == docs[SCANNED].id)).all()
            s.expunge_all()
        aside.rename(missing)
        assert do_retry(settings_from(env), batch) == 7  # `importer retry BATCH`
        requeued = _documents(db, batch)
        importer("worker", "--burst", env=workers, check=True, timeout=300)
        pages = {p.number: p for p in rows}
        yield Imported(env, batch, db, docs, pages, requeued, _documents(db, batch))
    finally:
        server.stop()


def test_only_the_degraded_scan_is_marked_for_review(imported: Imported) -> None:
    good, bad, empty = (imported.pages[n] for n in (1, 2, 3))
    assert [p.source for p in (good, bad, empty)] == [PageSource.ocr] * 3
    # real Tesseract: the clean page reads well, the blurred one badly, the blank not at all
    assert good.confidence is not None and good.confidence > REVIEW_BELOW
    assert "quarterly report" in good.text
    assert bad.confidence is not None and bad.confidence < REVIEW_BELOW
    assert empty.text == ""
    assert (good.review, bad.review, empty.review) == (False, True, False)


def test_each_document_counts_its_pages_by_source_and_for_review(imported: Imported) -> None:
    scanned, born = imported.docs[SCANNED], imported.docs["born.pdf"]
    assert (scanned.pages_text_layer, scanned.pages_ocr, scanned.pages_review) == (0, 3, 1)
    read = [p.confidence for p in imported.pages.values() if p.confidence is not None]
    assert scanned.mean_confidence == pytest.approx(sum(read) / len(read))
    assert born.status == DocStatus.done and born.pages_done == born.pages and born.pages
    assert (born.pages_text_layer, born.pages_ocr, born.pages_review) == (born.pages, 0, 0)
    assert born.mean_confidence is None


def test_status_of_the_batch_names_the_document_to_review(imported: Imported) -> None:
    printed = importer("status", imported.batch, "--json", env=imported.env, check=True).stdout
    report = json.loads(printed)
    (batch,) = report["batches"]
    assert batch["pages_review"] == 1
    job = imported.docs[SCANNED].job_id
    path = imported.docs[SCANNED].path
    assert report["review"] == [{"path": path, "job_id": job, "pages_review": 1}]
    assert report["review_total"] == 1
    by_path = {d["path"]: d for d in report["documents"]}
    assert by_path[path]["pages_review"] == 1
    assert by_path[imported.docs["born.pdf"].path]["pages_review"] == 0
    printed_table = io.StringIO()
    console = SafeConsole(file=printed_table, width=300)
    show_status(settings_from(imported.env), imported.batch, as_json=False, out=console)
    table = printed_table.getvalue()
    assert "1 pages need review, in 1 documents" in table
    assert table.count(SCANNED) == 2  # among the documents, and among those to review


def test_export_review_lists_the_page_in_every_format(imported: Imported) -> None:
    doc = imported.docs[SCANNED]
    confidence = imported.pages[2].confidence
    assert confidence is not None
    args = ("export", imported.batch, "--review")
    lines = importer(*args, env=imported.env, check=True).stdout.splitlines()
    expected = {
        "batch_id": imported.batch,
        "job_id": doc.job_id,
        "path": doc.path,
        "page": 2,
        "confidence": round(confidence, 1),
    }
    assert [json.loads(line) for line in lines] == [expected]
    written = {}
    for fmt in ("csv", "txt", "jsonl"):
        out = io.StringIO()
        assert export_review(imported.db, out, fmt) == 1  # every batch: this one's page
        written[fmt] = out.getvalue()
    assert list(csv.DictReader(io.StringIO(written["csv"]))) == [
        {key: str(value) for key, value in expected.items()}
    ]
    assert written["txt"] == (
        f"{json.dumps(doc.path)} page 2: confidence {confidence:.1f}"
        f" (batch {imported.batch}, job {doc.job_id})\n"
    )
    assert written["jsonl"].splitlines() == lines


def test_every_failure_records_its_kind(imported: Imported) -> None:
    kinds = {name: (d.status, d.error_kind) for name, d in imported.docs.items()}
    assert kinds == {
        SCANNED: (DocStatus.done, None),
        "born.pdf": (DocStatus.done, None),
        "encrypted.pdf": (DocStatus.failed, ErrorKind.encrypted),
        "corrupt.pdf": (DocStatus.failed, ErrorKind.corrupt),
        "download.pdf": (DocStatus.failed, ErrorKind.not_pdf),
        "too-many-pages.pdf": (DocStatus.failed, ErrorKind.over_limit),
        "outside.pdf": (DocStatus.failed, ErrorKind.outside_roots),
        "missing.pdf": (DocStatus.dead, ErrorKind.missing),
        "memory-hog.pdf": (DocStatus.dead, ErrorKind.out_of_memory),
    }
    for name in ("missing.pdf", "memory-hog.pdf"):
        error = imported.docs[name].error
        assert error is not None and "gave up after 1 attempts" in error, name


def test_a_retry_that_succeeds_clears_the_kind(imported: Imported) -> None:
    queued = imported.requeued["missing.pdf"]
    assert (queued.status, queued.error, queued.error_kind) == (DocStatus.queued, None, None)
    back = imported.retried["missing.pdf"]
    assert (back.status, back.error, back.error_kind) == (DocStatus.done, None, None)
    assert back.pages_text_layer == back.pages and back.pages
    still = imported.retried["encrypted.pdf"]
    assert (still.status, still.error_kind) == (DocStatus.failed, ErrorKind.encrypted)


# The blank test and the rule, on their own ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "image", "is_blank"),
    [
        ("white paper with specks", blank(), True),
        ("twice as many specks", blank(specks=50, seed=5), True),
        ("pure white", Image.new("L", SIZE, 255), True),
        ("grainy paper", grainy(), True),
        ("a clean page of text", typed(), False),
        ("the degraded page", degraded(), False),
        ("two words", typed(("Appendix B",)), False),
        ("faint gray text", typed(ink=190, paper=235), False),
        ("a dark page", Image.new("L", SIZE, 60), False),
    ],
)
def test_the_blank_test_on_page_images(
    tmp_path: Path, name: str, image: Image.Image, is_blank: bool
) -> None:
    path = tmp_path / "page.pgm"
    image.save(path)
    assert review.is_blank(path, SCAN_DPI) is is_blank, name


def test_an_image_that_cannot_be_judged_is_not_blank(tmp_path: Path) -> None:
    path = tmp_path / "page.pgm"
    path.write_bytes(b"P5\n10 10\n255\n")  # a header and no pixels
    assert review.is_blank(path, SCAN_DPI) is False


@pytest.mark.parametrize(
    ("page", "marked"),
    [
        (PageResult(1, "x", PageSource.ocr, 59.9, 1.0), True),
        (PageResult(1, "x", PageSource.ocr, 60.0, 1.0), False),
        (PageResult(1, "", PageSource.ocr, None, 1.0), True),  # ink, and no word read
        (PageResult(1, "", PageSource.ocr, None, 1.0, blank=True), False),
        (PageResult(1, "xx", PageSource.ocr, 12.0, 1.0, blank=True), False),
        (PageResult(1, "", PageSource.text_layer, None, 0.1), False),
    ],
)
def test_the_review_rule(page: PageResult, marked: bool) -> None:
    assert review.needs_review(page, REVIEW_BELOW) is marked


@pytest.mark.parametrize("value", ["-1", "100.5", "sixty"])
def test_a_review_confidence_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="IMPORTER_REVIEW_CONFIDENCE"):
        load_settings(review_confidence=value)


def test_the_counts_stay_right_when_pages_are_stored_again(database_url: str) -> None:
    """A replayed job stores its pages again: the counts come from the pages rows."""
    db = open_database(database_url)
    with db.session() as s:
        s.add(Batch(id="b-replay", email="a@example.com", total=1))
        s.add(Document(batch_id="b-replay", path="/in/a.pdf", sha256="0" * 64, job_id="j-r"))
    claimed = lifecycle.claim(
        db, job_id="j-r", path="/in/a.pdf", email="a@example.com", owner="w", lease_seconds=60
    )
    assert isinstance(claimed, lifecycle.Claimed)
    first = [
        lifecycle.StoredPage(1, "a", PageSource.ocr, 90.0, 1.0),
        lifecycle.StoredPage(2, "b", PageSource.ocr, 30.0, 1.0, review=True),
    ]
    for _ in range(2):
        assert lifecycle.save_pages(db, claimed.id, "w", first, 60, page_count=3)
    last = [lifecycle.StoredPage(3, "c", PageSource.text_layer, None, 0.1)]
    assert lifecycle.finish(db, claimed.id, owner="w", status=DocStatus.done, pages=last)
    with db.session() as s:
        doc = s.get(Document, claimed.id)
        assert doc is not None
        counts = (doc.pages_done, doc.pages_text_layer, doc.pages_ocr, doc.pages_review)
        assert counts == (3, 1, 2, 1)
        assert doc.mean_confidence == pytest.approx(60.0)


def test_a_document_queued_again_keeps_its_kind_until_it_is_claimed(database_url: str) -> None:
    db = open_database(database_url)
    with db.session() as s:
        s.add(Batch(id="b-again", email="a@example.com", total=1))
        s.add(Document(batch_id="b-again", path="/in/a.pdf", sha256="0" * 64, job_id="j-a"))
    job = {"job_id": "j-a", "path": "/in/a.pdf", "email": "a@example.com", "lease_seconds": 60}
    claimed = lifecycle.claim(db, owner="w", **job)
    assert isinstance(claimed, lifecycle.Claimed)
    status = lifecycle.retry_later(
        db, claimed.id, owner="w", error="timed out", error_kind=ErrorKind.timeout, max_attempts=3
    )
    assert status == DocStatus.queued
    with db.session() as s:
        assert s.scalar(select(Document.error_kind).where(Document.id == claimed.id)) == "timeout"
    later = utcnow() + timedelta(hours=1)  # past its backoff
    assert isinstance(lifecycle.claim(db, owner="w", now=later, **job), lifecycle.Claimed)
    with db.session() as s:
        row = s.execute(
            select(Document.error, Document.error_kind).where(Document.id == claimed.id)
        ).one()
    assert tuple(row) == (None, None)

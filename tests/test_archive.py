"""`submit --archive DIR`: each document done gets a searchable PDF under DIR, its OCRed
pages carrying Tesseract's invisible text, every other page copied as it was. Real
Tesseract, poppler and pypdf on PDFs the tests make (`tests.archive_pdfs`)."""

from __future__ import annotations

import difflib
import email
import hashlib
import http.client
import io
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pypdf import PageObject, PdfReader, PdfWriter
from pypdf.generic import (
    ContentStream,
    DictionaryObject,
    NameObject,
    RectangleObject,
    StreamObject,
)
from sqlalchemy import select, update

from importer.db.engine import open_database
from importer.db.models import Document, utcnow
from importer.notify import DocumentSummary, document_message
from importer.states import DocStatus
from tests import archive_pdfs
from tests.conftest import importer, settings_from, submit_json
from tests.mail_parts import plain_text
from workers.archive import placement
from workers.document import PageResult
from workers.reader import iter_pages

TOLERANCE = 5.0  # points
SIMILAR = 0.98


def pdftotext(pdf: Path, page: int) -> str:
    argv = ["pdftotext", "-f", str(page), "-l", str(page), str(pdf), "-"]
    return subprocess.run(argv, capture_output=True, check=True, text=True).stdout


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, " ".join(a.split()), " ".join(b.split())).ratio()


def export(env: dict[str, str], batch: str) -> dict[str, dict[str, Any]]:
    out = importer("export", batch, "--format", "jsonl", env=env, check=True).stdout
    return {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}


def status(env: dict[str, str], batch: str) -> dict[str, dict[str, Any]]:
    out = importer("status", batch, "--json", env=env, check=True).stdout
    return {Path(d["path"]).name: d for d in json.loads(out)["documents"]}


def files_in(directory: Path) -> list[str]:
    """Every file under the directory, hidden ones too, relative to it."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def import_with_archive(
    env: dict[str, str], inbox: Path, archive: Path, *extra: str
) -> tuple[str, dict[str, dict[str, Any]]]:
    batch = submit_json(inbox, env, "--archive", str(archive), *extra)["batch_id"]
    importer("worker", "--burst", env=env, check=True)
    return batch, export(env, batch)


def test_scanned_pages_of_every_shape_become_searchable_where_their_words_are(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """pdftotext of each archive gives the text stored in the database, and puts a known
    word inside its box on the page as shown: upright, /Rotate 90, MediaBox and CropBox
    away from the origin, content upside down (read turned by --psm 1)."""
    inbox, archive = tmp_path / "in", tmp_path / "archive"
    inbox.mkdir()
    scans = {shape: archive_pdfs.scanned(shape) for shape in archive_pdfs.SHAPES}
    for shape, scan in scans.items():
        (inbox / f"{shape}.pdf").write_bytes(scan.pdf)
    batch, records = import_with_archive(env, inbox, archive)
    shown = status(env, batch)
    assert files_in(archive) == sorted(f"{shape}.pdf" for shape in scans)
    for shape, scan in scans.items():
        record = records[f"{shape}.pdf"]
        assert record["status"] == "done", record["error"]
        path = Path(record["archive"])
        assert path == archive / f"{shape}.pdf" and shown[path.name]["archive"] == str(path)
        stored = record["text"]
        found = pdftotext(path, 1)
        assert similarity(stored, found) >= SIMILAR, f"{shape}: {found!r} against {stored!r}"
        assert archive_pdfs.WORD in found.split(), f"{shape}: the word is broken up: {found!r}"
        boxes = archive_pdfs.word_boxes(path, archive_pdfs.WORD)
        assert len(boxes) == 1, f"{shape}: {boxes}"
        inside(boxes[0], scan.word_box, shape)
        original = PdfReader(inbox / f"{shape}.pdf").pages[0]
        copy = PdfReader(path).pages[0]
        assert (copy.mediabox, copy.cropbox, copy.rotation) == (
            original.mediabox,
            original.cropbox,
            original.rotation,
        )
    assert (inbox / "upright.pdf").read_bytes() == scans["upright"].pdf  # never modified


def inside(found: archive_pdfs.Box, expected: archive_pdfs.Box, shape: str) -> None:
    x0, y0, x1, y1 = expected
    ok = (
        found[0] >= x0 - TOLERANCE
        and found[1] >= y0 - TOLERANCE
        and found[2] <= x1 + TOLERANCE
        and found[3] <= y1 + TOLERANCE
    )
    assert ok, f"{shape}: the word lies at {found}, not within {TOLERANCE} pt of {expected}"


def test_a_mixed_document_keeps_its_text_pages_and_gains_text_on_its_scans(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Text-layer pages' content streams stay byte for byte; the scanned page gains text;
    the page count and page sizes are the original's. The e-mail and status say where."""
    inbox, archive = tmp_path / "in", tmp_path / "archive"
    (inbox / "letters").mkdir(parents=True)
    typed = archive_pdfs.typeset(["Minutes of the garden society", "held in the hall"])
    scan = archive_pdfs.scanned("upright").pdf
    mixed = archive_pdfs.joined(typed, scan, typed)
    (inbox / "letters" / "minutes.pdf").write_bytes(mixed)
    batch, records = import_with_archive(env, inbox, archive)
    record = records["minutes.pdf"]
    assert record["status"] == "done", record["error"]
    assert record["archive"] == str(archive / "letters" / "minutes.pdf")  # its path under PATH
    original, copy = PdfReader(io.BytesIO(mixed)), PdfReader(record["archive"])
    assert len(copy.pages) == len(original.pages) == 3
    for number, (before, after) in enumerate(zip(original.pages, copy.pages, strict=True), 1):
        assert (after.mediabox, after.cropbox) == (before.mediabox, before.cropbox)
        if number == 2:  # the scan
            assert not pdftotext(inbox / "letters" / "minutes.pdf", 2).strip()
            assert archive_pdfs.WORD in pdftotext(Path(record["archive"]), 2)
        else:
            assert raw_contents(after) == raw_contents(before)  # the bytes, not decoded
            assert fonts(after) == fonts(before)
    maildir = Path(env["IMPORTER_DATA_DIR"]) / "mail" / "new"
    (sent,) = maildir.iterdir()
    assert f"Archive:   {archive}" in plain_text(email.message_from_bytes(sent.read_bytes()))
    csv_out = importer("export", batch, "--format", "csv", env=env, check=True).stdout
    assert str(archive / "letters" / "minutes.pdf") in csv_out


def raw_contents(page: PageObject) -> bytes:
    """A page's content stream as stored: its encoded bytes, filters and all."""
    stream = page["/Contents"].get_object()
    assert isinstance(stream, StreamObject), type(stream)
    return bytes(stream._data)


def fonts(page: PageObject) -> set[str]:
    resources = page["/Resources"].get_object()
    assert isinstance(resources, DictionaryObject)
    listed = resources["/Font"].get_object()
    assert isinstance(listed, DictionaryObject)
    return set(listed)


def test_a_failing_document_leaves_nothing_and_a_replay_one_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    inbox, archive = tmp_path / "in", tmp_path / "archive"
    inbox.mkdir()
    (inbox / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
    (inbox / "scan.pdf").write_bytes(archive_pdfs.scanned("upright").pdf)
    batch, records = import_with_archive(env, inbox, archive)
    assert records["broken.pdf"]["status"] == "failed" and records["broken.pdf"]["archive"] is None
    assert status(env, batch)["broken.pdf"]["archive"] is None
    assert files_in(archive) == ["scan.pdf"]  # no partial file, hidden or not
    first = (archive / "scan.pdf").read_bytes()
    written = (archive / "scan.pdf").stat().st_ino

    # gearmand replays a job whose worker died after writing: the same name, again
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        s.execute(
            update(Document)
            .where(Document.batch_id == batch, Document.path.like("%/scan.pdf"))
            .values(
                status=DocStatus.running,
                lease_expires_at=utcnow() - timedelta(hours=1),
                lease_owner="gone:1",
            )
        )
    db.engine.dispose()
    importer("requeue", "--stale", env=env, check=True)
    importer("worker", "--burst", env=env, check=True)
    again = export(env, batch)["scan.pdf"]
    assert again["status"] == "done" and again["archive"] == str(archive / "scan.pdf")
    assert files_in(archive) == ["scan.pdf"]
    assert (archive / "scan.pdf").stat().st_ino != written  # written again, by a rename
    assert (
        PdfReader(archive / "scan.pdf").pages[0].extract_text().split()[:3]
        == (PdfReader(io.BytesIO(first)).pages[0].extract_text().split()[:3])
    )


def test_names_never_collide(tmp_path: Path, env: dict[str, str]) -> None:
    """The same name from two PATHs, an import again with --force, and a file already in
    DIR: each document gets a name of its own and nothing in DIR is replaced."""
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "scan.pdf").write_bytes(b"someone else's file")
    one, two = tmp_path / "one", tmp_path / "two"
    for inbox, words in ((one, ["first copy of the letter"]), (two, ["second letter"])):
        inbox.mkdir()
        (inbox / "scan.pdf").write_bytes(archive_pdfs.typeset(words))
    batch = submit_json(one, env, "--archive", str(archive), "--force")["batch_id"]
    importer("worker", "--burst", env=env, check=True)
    second = importer(
        "submit",
        str(one),
        str(two),
        "--email",
        "ops@example.com",
        "--json",
        "--force",
        env={**env, "IMPORTER_ARCHIVE_DIR": str(archive)},
        check=True,
    )
    importer("worker", "--burst", env=env, check=True)
    names = []
    for listed in (batch, json.loads(second.stdout)["batch_id"]):
        out = importer("export", listed, "--format", "jsonl", env=env, check=True).stdout
        names += sorted(json.loads(line)["archive"] for line in out.splitlines())
    assert names == [str(archive / n) for n in ("scan-2.pdf", "scan-3.pdf", "scan-4.pdf")]
    assert (archive / "scan.pdf").read_bytes() == b"someone else's file"
    texts = sorted(" ".join(pdftotext(Path(n), 1).split()) for n in names)
    assert texts == sorted(["first copy of the letter"] * 2 + ["second letter"])


def test_inline_jobs_are_named_by_their_sha256(tmp_path: Path, env: dict[str, str]) -> None:
    inbox, archive = tmp_path / "in", tmp_path / "archive"
    inbox.mkdir()
    pdf = archive_pdfs.typeset(["sent inside the job"])
    (inbox / "inline.pdf").write_bytes(pdf)
    _, records = import_with_archive(env, inbox, archive, "--inline")
    name = hashlib.sha256(pdf).hexdigest() + ".pdf"
    assert records["inline.pdf"]["archive"] == str(archive / name)
    assert files_in(archive) == [name]


def test_an_archive_dir_that_cannot_be_written_is_refused_at_submit(
    tmp_path: Path, env: dict[str, str]
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(archive_pdfs.typeset(["a"]))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for target in (blocker, blocker / "archive"):
        proc = importer(
            "submit", str(inbox), "--email", "ops@example.com", "--archive", str(target), env=env
        )
        assert proc.returncode == 2, proc.stderr
        assert f"--archive {target}" in proc.stderr and "not a directory" in proc.stderr
    assert "a.pdf" not in importer("status", "--json", env=env, check=True).stdout


def test_the_dashboard_serves_the_archive_behind_its_token(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from tests.test_dashboard import TOKEN, dashboard

    inbox, archive = tmp_path / "in", tmp_path / "archive"
    inbox.mkdir()
    (inbox / "scan.pdf").write_bytes(archive_pdfs.typeset(["downloaded from the board"]))
    _, records = import_with_archive(env, inbox, archive)
    board_env = {**env, "IMPORTER_DASHBOARD_TOKEN": TOKEN}
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        doc_id = s.scalar(
            select(Document.id).where(Document.archive == records["scan.pdf"]["archive"])
        )
    db.engine.dispose()
    with dashboard(board_env, tmp_path / "dashboard.log") as url:
        address = urlsplit(url)

        def get(path: str, token: str | None) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            conn.request("GET", path, headers=headers)
            answer = conn.getresponse()
            body = answer.read()
            conn.close()
            return answer.status, body

        assert get(f"/documents/{doc_id}/archive.pdf", None)[0] == 401
        code, page = get(f"/documents/{doc_id}", TOKEN)
        assert code == 200 and f'href="/documents/{doc_id}/archive.pdf"' in page.decode()
        code, body = get(f"/documents/{doc_id}/archive.pdf", TOKEN)
        assert code == 200 and body == Path(records["scan.pdf"]["archive"]).read_bytes()
        os.replace(records["scan.pdf"]["archive"], tmp_path / "moved.pdf")
        os.symlink(tmp_path / "moved.pdf", records["scan.pdf"]["archive"])
        assert get(f"/documents/{doc_id}/archive.pdf", TOKEN)[0] == 404  # a link serves nothing


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_placement_maps_the_image_corners_onto_the_shown_page(turn: int) -> None:
    """The matrix maps the layer's lower left corner to the shown page's lower left,
    whatever the turn and the box's origin."""
    media = RectangleObject([100, 200, 700, 1000])  # 600 x 800
    shown = (800, 600) if turn in (90, 270) else (600, 800)
    layer = RectangleObject([0, 0, shown[0] * 1.01, shown[1] * 0.99])
    a, b, c, d, e, f = placement(media, turn, layer)
    corners = {
        0: (100, 200),  # the lower left of what is shown, in user space
        90: (700, 200),
        180: (700, 1000),
        270: (100, 1000),
    }
    assert (round(e, 6), round(f, 6)) == corners[turn]
    far = (
        a * float(layer.width) + c * float(layer.height) + e,
        b * float(layer.width) + d * float(layer.height) + f,
    )
    opposite = {0: (700, 1000), 90: (100, 1000), 180: (100, 200), 270: (700, 200)}
    assert (round(far[0], 6), round(far[1], 6)) == opposite[turn]


def archive_of(pdf: Path, out: Path, skip: tuple[int, ...] = ()) -> list[int]:
    """The engine's reading of `pdf` with its searchable copy written to `out`, in this
    process; the numbers of the pages it yielded."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        pages = iter_pages(pdf, skip_pages=skip, archive_fd=fd)
        return [page.number for page in pages if isinstance(page, PageResult)]
    finally:
        os.close(fd)


def test_a_resumed_document_gets_text_on_the_pages_stored_before(tmp_path: Path) -> None:
    """Pages a retry skips (stored by an earlier attempt) are read again for the archive,
    and not yielded again."""
    scan = archive_pdfs.scanned("upright").pdf
    (tmp_path / "two.pdf").write_bytes(archive_pdfs.joined(scan, scan))
    assert archive_of(tmp_path / "two.pdf", tmp_path / "out.pdf", skip=(1,)) == [2]
    for page in (1, 2):
        assert archive_pdfs.WORD in pdftotext(tmp_path / "out.pdf", page).split()


def test_what_a_page_leaves_of_its_graphics_state_does_not_move_the_text(
    tmp_path: Path,
) -> None:
    """A content stream that ends inside a scaled coordinate system (no closing Q): the
    layer is drawn outside it, where the words are."""
    scan = archive_pdfs.scanned("upright")
    reader = PdfReader(io.BytesIO(scan.pdf))
    writer = PdfWriter(clone_from=reader)
    page = writer.pages[0]
    content = ContentStream(None, writer)
    content.set_data(page.get_contents().get_data() + b"\n0.5 0 0 0.5 0 0 cm\n")  # type: ignore[union-attr]
    page[NameObject("/Contents")] = writer._add_object(content)
    with open(tmp_path / "unbalanced.pdf", "wb") as out:
        writer.write(out)
    archive_of(tmp_path / "unbalanced.pdf", tmp_path / "out.pdf")
    (box,) = archive_pdfs.word_boxes(tmp_path / "out.pdf", archive_pdfs.WORD)
    inside(box, scan.word_box, "unbalanced")


def test_a_document_e_mail_names_its_archive() -> None:
    """`--notify each`: the document's e-mail, plain and HTML, names its searchable PDF."""
    summary = DocumentSummary(
        batch_id="20260101-000000-abcdef",
        job_id="j-1",
        email="ops@example.com",
        path="/in/letter.pdf",
        status=DocStatus.done,
        pages=2,
        error=None,
        seconds=3.0,
        archive="/srv/searchable/letter.pdf",
    )
    message = document_message(summary, mail_from="importer@localhost")
    assert "Archive: /srv/searchable/letter.pdf" in plain_text(message)
    html = message.get_body(("html",))
    assert html is not None and "/srv/searchable/letter.pdf" in html.get_content()

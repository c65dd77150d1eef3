"""The document engine against real poppler and real Tesseract, on the committed samples.

Accuracy is the character error rate (edit distance over the expected length, on
whitespace-normalised text) against `sample_pdfs/X.txt`. Whether a program ran is
observed, not mocked: a wrapper script that logs its arguments and then runs the real
program is put first on PATH for the in-process `iter_pages`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from importer.states import PageSource, TextLayerMode
from workers import textlayer, tools
from workers.document import (
    ChildCrashed,
    CorruptPdf,
    DocumentError,
    DocumentInfo,
    EncryptedPdf,
    LanguageUnavailable,
    Limits,
    NotAPdf,
    OverLimit,
    PageResult,
    PageTimeout,
)
from workers.engine import forkserver_pid, process_document
from workers.reader import iter_pages
from workers.textlayer import TextKind

SAMPLES = Path(__file__).resolve().parent.parent / "sample_pdfs"
TOOLS = ("tesseract", "pdftoppm", "pdftotext", "pdfinfo")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]

pytestmark = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),
    reason=f"not installed: {', '.join(MISSING)} (scripts/install-deps or apt-get install"
    " tesseract-ocr poppler-utils)",
)

Items = list[DocumentInfo | PageResult]


# Helpers ------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance by Hyyrö's bit-parallel algorithm: exact, and fast enough for pages."""
    if not a or not b:
        return len(a) + len(b)
    peq: dict[str, int] = {}
    for i, char in enumerate(a):
        peq[char] = peq.get(char, 0) | (1 << i)
    mask, high = (1 << len(a)) - 1, 1 << (len(a) - 1)
    pv, mv, score = mask, 0, len(a)
    for char in b:
        eq = peq.get(char, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & mask
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv
    return score


def cer(expected: str, got: str) -> float:
    expected, got = " ".join(expected.split()), " ".join(got.split())
    return levenshtein(expected, got) / max(1, len(expected))


def expected_pages(name: str) -> list[str]:
    return (SAMPLES / f"{name}.txt").read_text(encoding="utf-8").split("\f")


def pages_of(items: Items) -> list[PageResult]:
    return [item for item in items if isinstance(item, PageResult)]


def engine_children() -> list[int]:
    """Our own document children: the children of this process's engine fork server."""
    return children_of(forkserver_pid())


def children_of(parent: int | None) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if parent is None or not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, after giving SIGKILL a moment."""
    members: list[int] = []
    for _ in range(40):
        members = group_members_now(pgid)
        if not members:
            break
        time.sleep(0.05)
    return members


def group_members_now(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, now."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def start_and_find_child(items: Iterator[DocumentInfo | PageResult]) -> int:
    """Advance to DocumentInfo and return the pid of the fork server's child for it (its
    process group; the keeper of the document's namespaces, when it has walls)."""
    assert isinstance(next(items), DocumentInfo)
    children = engine_children()
    assert len(children) == 1, children
    return children[0]


def reader_of(child: int) -> int:
    """The process that reads the document: the keeper's only child, or `child` itself."""
    inside = children_of(child)
    assert len(inside) <= 1, inside
    return inside[0] if inside else child


@pytest.fixture(scope="module")
def results() -> dict[str, Items]:
    """Each sample read once through the isolated engine, shared by the accuracy tests."""
    names = ("scanned_letter", "scanned_memo", "born_digital", "mixed", "rotated")
    return {name: list(process_document(SAMPLES / f"{name}.pdf")) for name in names}


@pytest.fixture
def tool_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[str]]:
    """Put logging wrappers for tesseract and pdftoppm first on PATH; return a reader.

    The reader lists the runs that processed an image or a page (not `--list-langs`).
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("tesseract", "pdftoppm"):
        real = shutil.which(tool)
        assert real is not None
        wrapper = bin_dir / tool
        log = tmp_path / f"{tool}.log"
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def runs(tool: str) -> list[str]:
        log = tmp_path / f"{tool}.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if not line.startswith("--")]

    return runs


@pytest.fixture
def private_tmp(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make this process's temporary files land in a directory the test can inspect."""
    root = shared_tmp / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


# Accuracy and the choice of source -----------------------------------------------------


def test_levenshtein_matches_the_textbook_definition() -> None:
    def slow(a: str, b: str) -> int:
        row = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            prev, row[0] = row[0], i
            for j, cb in enumerate(b, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
        return row[-1]

    pairs = [("", "abc"), ("kitten", "sitting"), ("flaw", "lawn"), ("a" * 70, "b" + "a" * 68)]
    pairs += [("Harbor Valley 40-7719-2", "Harbor Va1ley 40- 719-2."), ("same", "same")]
    for a, b in pairs:
        assert levenshtein(a, b) == slow(a, b), (a, b)


@pytest.mark.parametrize("name", ["scanned_letter", "scanned_memo"])
def test_scanned_pages_are_ocred_accurately(results: dict[str, Items], name: str) -> None:
    info, *_ = results[name]
    expected = expected_pages(name)
    assert info == DocumentInfo(pages=len(expected))
    pages = pages_of(results[name])
    assert [page.number for page in pages] == list(range(1, len(expected) + 1))
    for page in pages:
        assert page.source is PageSource.ocr
        assert page.confidence is not None and page.confidence > 80
        assert cer(expected[page.number - 1], page.text) <= 0.02, page.number


def test_born_digital_pages_come_from_the_text_layer(results: dict[str, Items]) -> None:
    expected = expected_pages("born_digital")
    pages = pages_of(results["born_digital"])
    assert [page.source for page in pages] == [PageSource.text_layer] * 3
    for page in pages:
        assert page.confidence is None
        assert cer(expected[page.number - 1], page.text) <= 0.001


def test_born_digital_pages_never_reach_tesseract(tool_runs: Callable[[str], list[str]]) -> None:
    pages = pages_of(list(iter_pages(SAMPLES / "born_digital.pdf")))
    assert len(pages) == 3
    assert tool_runs("tesseract") == []
    assert tool_runs("pdftoppm") == []


def test_mixed_document_gets_the_right_source_per_page(results: dict[str, Items]) -> None:
    expected = expected_pages("mixed")
    pages = pages_of(results["mixed"])
    sources = [page.source for page in pages]
    assert sources == [PageSource.text_layer, PageSource.ocr, PageSource.text_layer]
    for page in pages:
        assert cer(expected[page.number - 1], page.text) <= 0.02, page.number


def test_mixed_document_runs_tesseract_once(tool_runs: Callable[[str], list[str]]) -> None:
    list(iter_pages(SAMPLES / "mixed.pdf"))
    assert len(tool_runs("pdftoppm")) == 1
    assert " -f 2 -l 2 " in tool_runs("pdftoppm")[0]
    assert len(tool_runs("tesseract")) == 1


def test_sideways_scanned_page_is_read(results: dict[str, Items]) -> None:
    expected = expected_pages("rotated")
    upright, sideways = pages_of(results["rotated"])
    assert cer(expected[0], upright.text) <= 0.02
    assert sideways.source is PageSource.ocr
    assert cer(expected[1], sideways.text) <= 0.05


@pytest.fixture(scope="module")
def turned_scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scanned_memo's page as scanned four ways up: 0, 90, 180 and 270 degrees."""
    from PIL import Image

    out = tmp_path_factory.mktemp("turned")
    tools.run_tool(
        [
            "pdftoppm",
            "-r",
            "200",
            "-gray",
            "-singlefile",
            str(SAMPLES / "scanned_memo.pdf"),
            str(out / "page"),
        ],
        timeout=60,
    )
    with Image.open(out / "page.pgm") as page:
        turned = [page.rotate(degrees, expand=True) for degrees in (0, 90, 180, 270)]
    turned[0].save(
        out / "turned.pdf", "PDF", resolution=200.0, save_all=True, append_images=turned[1:]
    )
    return out / "turned.pdf"


def test_turned_pages_are_read_in_one_pass(
    turned_scans: Path, tool_runs: Callable[[str], list[str]]
) -> None:
    expected = expected_pages("scanned_memo")[0]
    pages = pages_of(list(iter_pages(turned_scans)))
    assert len(pages) == 4
    for page, degrees in zip(pages, (0, 90, 180, 270), strict=True):
        assert page.source is PageSource.ocr
        assert cer(expected, page.text) <= 0.03, degrees
    runs = tool_runs("tesseract")
    assert len(runs) == 4, runs  # one run a page: no pass read, judged and thrown away
    assert all("--psm 1" in run for run in runs), runs


def test_without_a_readable_text_layer_every_page_is_ocred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pdftotext failing (here a stand-in that exits 1) sends every page to OCR, and pdfinfo
    then sizes every page to render, not only the first."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    failing = bin_dir / "pdftotext"
    failing.write_text("#!/bin/sh\necho 'Syntax Error: broken text' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    expected = expected_pages("mixed")
    pages = pages_of(list(iter_pages(SAMPLES / "mixed.pdf")))
    assert [page.source for page in pages] == [PageSource.ocr] * 3
    for page in pages:
        assert cer(expected[page.number - 1], page.text) <= 0.05, page.number


def test_a_page_is_judged_by_whether_its_text_can_be_real() -> None:
    contents = "\n".join(
        f"{n}.{m} Section {n}.{m} " + "." * 40 + f" {10 * n + m}"
        for n in range(1, 5)
        for m in range(1, 5)
    )
    assert textlayer.classify(contents) is TextKind.full  # dot leaders and page numbers
    assert textlayer.classify("12.5 -0.07 1,234.56 98% " * 20) is TextKind.full  # a table
    bullets = "\uf0b7 A bulleted item in a Word document, its bullet unmapped.\n" * 8
    assert textlayer.classify(bullets) is TextKind.full
    assert textlayer.classify("   12  \n") is TextKind.sparse  # a page number on a scan
    assert textlayer.classify("RECEIVED 2026-11-03 Accounts") is TextKind.sparse  # a stamp
    assert textlayer.classify("\ue000\ue001\ue002 " * 40 + "abc") is TextKind.unreal
    assert textlayer.classify("\ufffd" * 300) is TextKind.unreal
    assert textlayer.classify(" \n\t ") is TextKind.empty


def test_which_pages_each_mode_ocrs() -> None:
    auto, ocr_all, keep = TextLayerMode.auto, TextLayerMode.ocr, TextLayerMode.keep
    for kind in TextKind:
        assert textlayer.needs_ocr(kind, ocr_all)
        assert textlayer.needs_ocr(kind, keep) == (kind is TextKind.empty)
    assert textlayer.needs_ocr(TextKind.empty, auto)
    assert textlayer.needs_ocr(TextKind.unreal, auto)
    assert not textlayer.needs_ocr(TextKind.full, auto, image_coverage=1.0)
    assert textlayer.needs_ocr(TextKind.sparse, auto, image_coverage=0.95)  # stamped scan
    assert not textlayer.needs_ocr(TextKind.sparse, auto, image_coverage=0.2)  # a figure
    assert not textlayer.needs_ocr(TextKind.sparse, auto)  # no images: a short page
    assert [k for k in TextKind if textlayer.needs_probe(k, auto)] == [TextKind.sparse]
    assert not any(textlayer.needs_probe(k, mode) for k in TextKind for mode in (ocr_all, keep))


# Documents that must be refused --------------------------------------------------------


def test_broken_file_is_refused_quickly_as_corrupt() -> None:
    started = time.monotonic()
    with pytest.raises(CorruptPdf) as caught:
        list(process_document(SAMPLES / "broken.pdf"))
    assert not caught.value.transient
    assert caught.value.reason.startswith("corrupt PDF")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("content", [b"<html><body>Not found</body></html>", b""])
def test_file_that_is_not_a_pdf(tmp_path: Path, content: bytes) -> None:
    fake = tmp_path / "report.pdf"
    fake.write_bytes(content)
    with pytest.raises(NotAPdf) as caught:
        list(process_document(fake))
    assert not caught.value.transient
    assert caught.value.reason.startswith("not a PDF")


def test_password_protected_pdf(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=SAMPLES / "born_digital.pdf")
    writer.encrypt("secret", algorithm="AES-256")
    locked = tmp_path / "locked.pdf"
    writer.write(locked)
    with pytest.raises(EncryptedPdf) as caught:
        list(process_document(locked))
    assert not caught.value.transient
    assert caught.value.reason.startswith("encrypted PDF")


def test_pdf_restricted_by_owner_password_only_is_read(tmp_path: Path) -> None:
    """Any viewer opens it without a password, so it is read, not refused."""
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=SAMPLES / "born_digital.pdf")
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    restricted = tmp_path / "restricted.pdf"
    writer.write(restricted)
    pages = pages_of(list(iter_pages(restricted)))
    assert [page.source for page in pages] == [PageSource.text_layer] * 3


def test_page_pixel_cap_refuses_before_rasterizing(
    tool_runs: Callable[[str], list[str]],
) -> None:
    limits = Limits(max_page_pixels=2_000_000)  # a letter page at 300 dpi is 8.4 MP
    with pytest.raises(OverLimit) as caught:
        list(iter_pages(SAMPLES / "scanned_memo.pdf", limits=limits))
    assert not caught.value.transient
    assert "page 1" in caught.value.reason and "megapixel" in caught.value.reason
    assert tool_runs("pdftoppm") == []
    # Pages read from their text layer are never rasterized, so the cap does not apply.
    assert len(pages_of(list(iter_pages(SAMPLES / "born_digital.pdf", limits=limits)))) == 3


def test_file_size_and_page_count_caps() -> None:
    with pytest.raises(OverLimit, match="IMPORTER_MAX_FILE_MB"):
        list(process_document(SAMPLES / "mixed.pdf", limits=Limits(max_file_bytes=10_000)))
    with pytest.raises(OverLimit, match="3 pages, over the 2 page cap"):
        list(process_document(SAMPLES / "born_digital.pdf", limits=Limits(max_pages=2)))


def test_missing_language_is_named(tmp_path: Path) -> None:
    with pytest.raises(LanguageUnavailable, match="tesseract-ocr-xyz"):
        list(process_document(SAMPLES / "scanned_memo.pdf", lang="eng+xyz"))
    with pytest.raises(LanguageUnavailable, match="not a Tesseract language name"):
        list(process_document(SAMPLES / "scanned_memo.pdf", lang="eng --user-words /etc/passwd"))


def test_missing_orientation_data_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without osd, Tesseract's --psm 1 reads turned pages as garbage and says nothing."""
    tessdata = tmp_path / "tessdata"
    tessdata.mkdir()
    installed = next(Path("/usr/share/tesseract-ocr").glob("*/tessdata/eng.traineddata"))
    (tessdata / "eng.traineddata").symlink_to(installed)
    monkeypatch.setenv("TESSDATA_PREFIX", str(tessdata))
    with pytest.raises(LanguageUnavailable, match="osd .*apt-get install tesseract-ocr-osd"):
        list(iter_pages(SAMPLES / "scanned_memo.pdf"))


# Isolation: timeouts, crashes, clean-up ------------------------------------------------


def test_page_timeout_kills_everything(private_tmp: Path) -> None:
    items = process_document(SAMPLES / "scanned_letter.pdf", limits=Limits(page_timeout=0.4))
    child = start_and_find_child(items)
    with pytest.raises(PageTimeout) as caught:
        list(items)
    assert caught.value.transient
    # Tesseract alone needs more than 0.4 s for a page; on a very busy machine an
    # earlier step may be the one to run out of time.
    assert re.match(
        r"(Tesseract|pdftoppm) timed out on page 1|pdf\w+ timed out", caught.value.reason
    )
    assert group_members(child) == []
    assert engine_children() == []
    assert list(private_tmp.iterdir()) == []


def test_stuck_child_is_killed_by_the_parent(private_tmp: Path) -> None:
    """A child that stops answering (here: SIGSTOP) is killed with its whole group."""
    items = process_document(SAMPLES / "scanned_letter.pdf", limits=Limits(page_timeout=1.0))
    child = start_and_find_child(items)
    os.kill(reader_of(child), signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(PageTimeout, match="no progress for 1 s on page 1"):
        list(items)
    assert time.monotonic() - started < 10
    assert group_members(child) == []
    assert list(private_tmp.iterdir()) == []


def test_child_killed_from_outside_is_reported(private_tmp: Path) -> None:
    items = process_document(SAMPLES / "scanned_letter.pdf")
    child = start_and_find_child(items)
    os.kill(reader_of(child), signal.SIGKILL)
    with pytest.raises(ChildCrashed) as caught:
        list(items)
    assert caught.value.transient
    assert caught.value.reason == "worker child killed by signal 9 (SIGKILL) on page 1"
    assert group_members(child) == []
    assert list(private_tmp.iterdir()) == []


def test_leaving_early_stops_the_child(private_tmp: Path) -> None:
    items = process_document(SAMPLES / "scanned_letter.pdf")
    child = start_and_find_child(items)
    assert isinstance(items, Generator)
    items.close()  # what a `break` or an exception in the caller's loop does
    assert group_members(child) == []
    assert engine_children() == []
    assert list(private_tmp.iterdir()) == []


def test_isolated_child_survives_nothing_in_the_caller(results: dict[str, Items]) -> None:
    """Errors are raised in the caller as DocumentError, and the caller keeps working."""
    with pytest.raises(DocumentError):
        list(process_document(SAMPLES / "broken.pdf"))
    again = pages_of(list(process_document(SAMPLES / "born_digital.pdf")))
    first = pages_of(results["born_digital"])
    assert [(p.number, p.text) for p in again] == [(p.number, p.text) for p in first]


# Resuming -------------------------------------------------------------------------------


def test_skip_pages_resumes_a_document(results: dict[str, Items]) -> None:
    items = list(process_document(SAMPLES / "scanned_letter.pdf", skip_pages={1}))
    assert items[0] == DocumentInfo(pages=2)
    (page,) = pages_of(items)
    assert page.number == 2
    assert page.text == pages_of(results["scanned_letter"])[1].text


def test_skip_every_page_reads_nothing(tool_runs: Callable[[str], list[str]]) -> None:
    items = list(iter_pages(SAMPLES / "scanned_letter.pdf", skip_pages={1, 2}))
    assert items == [DocumentInfo(pages=2)]
    assert tool_runs("pdftoppm") == []


def test_renderer_out_of_memory_is_not_an_empty_page(tmp_path: Path) -> None:
    """poppler exits 0 with a 0x0 image when it runs out of memory: never store that as text."""
    from tests import hostile

    doc = hostile.memory_hog(tmp_path / "hog.pdf", megapixels=150, dpi=150)
    limits = Limits(dpi=150, memory_bytes=150 * 2**20, max_page_pixels=10**9)
    with pytest.raises(DocumentError) as caught:
        list(process_document(doc, limits=limits))
    assert caught.value.transient
    assert "memory" in caught.value.reason


def test_decompression_bomb_is_refused_before_rendering(tmp_path: Path) -> None:
    from tests import hostile

    started = time.monotonic()
    with pytest.raises(OverLimit, match="60,000 x 60,000 pixel image"):
        list(process_document(hostile.jbig2_bomb(tmp_path / "bomb.pdf")))
    assert time.monotonic() - started < 10


def test_scans_render_at_their_own_resolution(caplog: pytest.LogCaptureFixture) -> None:
    """A 200 dpi scan is not upsampled to 300 dpi: that adds Tesseract time, not detail."""
    caplog.set_level(logging.DEBUG, logger="workers.tools")
    results = list(iter_pages(SAMPLES / "scanned_letter.pdf", limits=Limits(dpi=300)))
    renders = [r.getMessage() for r in caplog.records if "pdftoppm -r" in r.getMessage()]
    assert renders and all("pdftoppm -r 200 " in m for m in renders), renders
    assert all(isinstance(r, DocumentInfo) or r.source == PageSource.ocr for r in results)

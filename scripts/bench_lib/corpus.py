"""The bench's corpus: generated deterministically, kept under the work dir and reused.

Scanned-like and born-digital pages are made the way `scripts/make_samples.py` makes the
samples (the same typesetting, rendering and roughening), with paragraphs drawn from the
samples' own words, so every page comes with the text it should yield. The files for
the submission test are one tiny PDF template with a different number in each.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import make_samples as ms

from bench_lib.pages import fitting, paragraph_pages, scanned_pages
from bench_lib.tinypdf import tiny_pdf

log = logging.getLogger(__name__)

VERSION = "v2"  # bump when the way the corpus is made changes
FILES_PER_DIR = 1000
SCAN_DOC_SIZES = (3, 3, 2, 2, 1, 1, 1, 1)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Sizes:
    scanned_pages: int = 14
    born_docs: int = 200
    born_max_pages: int = 8
    submit_files: int = 20_000
    memory_pages: tuple[int, int] = (8, 96)

    @property
    def key(self) -> str:
        small, large = self.memory_pages
        return (
            f"corpus-{VERSION}-s{self.scanned_pages}-b{self.born_docs}x{self.born_max_pages}"
            f"-f{self.submit_files}-m{small}-{large}"
        )


QUICK = Sizes(scanned_pages=2, born_docs=4, born_max_pages=3, submit_files=200, memory_pages=(1, 2))


@dataclass(frozen=True)
class Doc:
    path: Path
    pages: int
    expected: str  # each page's text, pages joined by a form feed
    kinds: tuple[str, ...] = ()  # per page, where the corpus says: "text", "scan", "blank" ...
    rotations: tuple[int, ...] = ()  # per page, degrees the sheet lay turned, where known

    def page_texts(self) -> list[str]:
        return self.expected.split("\f")


@dataclass(frozen=True)
class Corpus:
    root: Path
    scanned: list[Doc]  # image only, 1 to 3 pages
    born: list[Doc]  # text layer only
    submit_dir: Path
    submit_files: int
    memory: list[Doc]  # the small and the large scanned document

    @property
    def scanned_pages(self) -> int:
        return sum(d.pages for d in self.scanned)

    @property
    def born_pages(self) -> int:
        return sum(d.pages for d in self.born)


def describe(corpus: Corpus) -> str:
    sizes = ", ".join(str(d.pages) for d in corpus.scanned)
    small, large = corpus.memory
    return (
        f"- {corpus.scanned_pages} scanned-like pages (typeset, rendered and roughened as"
        " `scripts/make_samples.py` does; in turn a 200-dpi gray JPEG and a 300-dpi 1-bit G4"
        f" scan, no text layer) in {len(corpus.scanned)} documents of {sizes} pages.\n"
        f"- {len(corpus.born)} born-digital documents (text layer only), {corpus.born_pages}"
        " pages.\n"
        f"- {corpus.submit_files:,} distinct one-page PDFs of about 600 bytes for submission.\n"
        f"- A {small.pages}-page and a {large.pages}-page scan made of the scanned pages in turn.\n"
        f"- Generated into `{corpus.root.name}/` under the work dir, and reused."
    )


def load_or_build(work_dir: Path, sizes: Sizes) -> Corpus:
    root = work_dir / sizes.key
    manifest = root / MANIFEST
    if manifest.is_file():
        return _load(root, json.loads(manifest.read_text(encoding="utf-8")))
    log.info("generating the corpus in %s", root)
    root.mkdir(parents=True, exist_ok=True)
    pages = scanned_pages(sizes.scanned_pages)
    scanned = build_scanned(root / "scanned", pages)
    born = _build_born(root / "born", sizes.born_docs, sizes.born_max_pages)
    memory = _build_memory(root / "memory", pages, sizes.memory_pages)
    data = {
        "scanned": _docs_json(root, scanned),
        "born": _docs_json(root, born),
        "memory": _docs_json(root, memory),
        "submit_files": write_small_pdfs(root / "submit", sizes.submit_files),
    }
    manifest.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return _load(root, data)


def _load(root: Path, data: dict[str, object]) -> Corpus:
    files = data["submit_files"]
    assert isinstance(files, int)
    return Corpus(
        root,
        docs_from_json(root, data["scanned"]),
        docs_from_json(root, data["born"]),
        root / "submit",
        files,
        docs_from_json(root, data["memory"]),
    )


def docs_from_json(root: Path, items: object) -> list[Doc]:
    assert isinstance(items, list)
    return [
        Doc(
            root / d["path"],
            int(d["pages"]),
            str(d["expected"]),
            tuple(d.get("kinds", ())),
            tuple(d.get("rotations", ())),
        )
        for d in items
    ]


def _docs_json(root: Path, docs: list[Doc]) -> list[dict[str, object]]:
    return [
        {
            "path": str(d.path.relative_to(root)),
            "pages": d.pages,
            "expected": d.expected,
            "kinds": list(d.kinds),
            "rotations": list(d.rotations),
        }
        for d in docs
    ]


def cached_sets(root: Path, build: Callable[[Path], dict[str, list[Doc]]]) -> dict[str, list[Doc]]:
    """Sets of documents built once into `root` by `build`, then read from its manifest."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        log.info("generating %s", root)
        root.mkdir(parents=True, exist_ok=True)
        built = build(root)
        data = {name: _docs_json(root, docs) for name, docs in built.items()}
        manifest.write_text(json.dumps(data, indent=1), encoding="utf-8")
    data = json.loads(manifest.read_text(encoding="utf-8"))
    return {name: docs_from_json(root, items) for name, items in data.items()}


def doc_sizes(pages: int) -> list[int]:
    """Page counts of the scanned documents: the longest first, as a queue serves them best."""
    sizes: list[int] = []
    while sum(sizes) < pages:
        sizes.append(min(SCAN_DOC_SIZES[len(sizes) % len(SCAN_DOC_SIZES)], pages - sum(sizes)))
    return sizes


def assemble(path: Path, pages: list[tuple[bytes, str]]) -> Doc:
    path.write_bytes(ms.assemble([blob for blob, _ in pages]))
    return Doc(path, len(pages), "\f".join(text for _, text in pages))


def build_scanned(out: Path, pages: list[tuple[bytes, str]]) -> list[Doc]:
    out.mkdir(parents=True, exist_ok=True)
    docs, used = [], 0
    for number, size in enumerate(doc_sizes(len(pages))):
        docs.append(assemble(out / f"scan-{number + 1:03d}.pdf", pages[used : used + size]))
        used += size
    return docs


def _build_born(out: Path, count: int, max_pages: int) -> list[Doc]:
    out.mkdir(parents=True, exist_ok=True)
    pages = paragraph_pages(count * max_pages, seed=2)
    docs = []
    used = 0
    for number in range(count):
        size = number % max_pages + 1
        blobs, texts = [], []
        for page in pages[used : used + size]:
            lines = fitting(dataclasses.replace(page, kind="text"), ms.SANS)
            blobs.append(ms.typeset(lines, ms.SANS))
            texts.append(ms.expected_text(lines))
        used += size
        path = out / f"born-{number + 1:04d}.pdf"
        path.write_bytes(ms.assemble(blobs))
        docs.append(Doc(path, size, "\f".join(texts)))
    log.info("wrote %d born-digital documents (%d pages)", count, used)
    return docs


def _build_memory(
    out: Path, pages: list[tuple[bytes, str]], page_counts: tuple[int, ...]
) -> list[Doc]:
    """Longer scans made of the scanned pages in turn, so only the page count differs."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        assemble(out / f"scan-{count}-pages.pdf", [pages[n % len(pages)] for n in range(count)])
        for count in page_counts
    ]


def write_small_pdfs(out: Path, count: int) -> int:
    """`count` distinct one-page PDFs, FILES_PER_DIR to a folder."""
    for number in range(count):
        folder = out / f"{number // FILES_PER_DIR:03d}"
        if number % FILES_PER_DIR == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc-{number:06d}.pdf").write_bytes(tiny_pdf(number))
    log.info("wrote %d small PDFs", count)
    return count

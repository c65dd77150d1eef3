"""The mixed corpus: documents like the ones users have, made by `scripts/make_documents.py`
— long born-digital manuals with contents and index pages, scans (some turned), a scan
with a stamped line and one under a garbage text layer, a blank page, and a document that
mixes all of them. Every page comes with its expected text and its kind."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench_lib.corpus import Doc, cached_sets

if TYPE_CHECKING:
    from make_documents import Built

VERSION = "v1"
# Pages without real text, which the importer must OCR: image-only scans, a scan whose
# only text is a stamped line, and a blank page (no text at all). A scan under an earlier
# OCR's full text layer has text: kept under --text-layer auto, by the importer and the limit.
OCR_KINDS = ("scan", "stamped-scan", "blank")
TEXT_KINDS = ("text", "garbage-layer-scan")
LISTINGS = ("Contents", "List of Figures", "Index")  # first lines of contents and index pages


def _full() -> dict[str, Callable[[], Built]]:
    import make_documents as md  # imported only when the section runs

    return {
        "manual-36": lambda: md.manual(pages=36, seed=0),
        "manual-24": lambda: md.manual(pages=24, seed=1),
        "scans-3": lambda: md.scan_document(pages=3, rotations=(0,), seed=10),
        "scans-turned-4": lambda: md.scan_document(pages=4, rotations=(0, 90, 180, 270), seed=20),
        "scan-stamped": lambda: md.concat(md.stamped_scan(seed=30), md.garbage_layer_scan(31)),
        "scan-blank-back": lambda: md.concat(md.scan_document(1, (0,), seed=40), md.blank_page()),
        "mixed": lambda: md.mixed_document(seed=5),
    }


def _quick() -> dict[str, Callable[[], Built]]:
    import make_documents as md

    return {"mixed": lambda: md.mixed_document(seed=5)}


def corpus(work_dir: Path, quick: bool) -> list[Doc]:
    """The documents, built once per version of make_documents.py and kept under `work_dir`."""
    recipe = _quick() if quick else _full()
    source = (Path(__file__).parent.parent / "make_documents.py").read_bytes()
    key = f"mixed-{VERSION}-{'quick' if quick else 'full'}-{hashlib.sha256(source).hexdigest()[:8]}"

    def build(root: Path) -> dict[str, list[Doc]]:
        folder = root / "docs"
        folder.mkdir(parents=True, exist_ok=True)
        docs = []
        for name, make in recipe.items():
            built = make()
            path = folder / f"{name}.pdf"
            path.write_bytes(built.pdf)
            expected = "\f".join(built.pages)
            docs.append(Doc(path, len(built.pages), expected, built.kinds, built.rotations))
        return {"mixed": docs}

    return cached_sets(work_dir / key, build)["mixed"]


def needs_ocr(doc: Doc, number: int) -> bool:
    return doc.kinds[number - 1] in OCR_KINDS


def is_text(doc: Doc, number: int) -> bool:
    return doc.kinds[number - 1] in TEXT_KINDS


def is_listing(doc: Doc, number: int) -> bool:
    """A contents, list-of-figures or index page: mostly dot leaders and page numbers."""
    first = doc.page_texts()[number - 1].lstrip().split("\n", 1)[0]
    return is_text(doc, number) and first.startswith(LISTINGS)


def describe(docs: list[Doc]) -> str:
    kinds: dict[str, int] = {}
    for doc in docs:
        for kind in doc.kinds:
            kinds[kind] = kinds.get(kind, 0) + 1
    listing = sum(is_listing(d, n) for d in docs for n in range(1, d.pages + 1))
    turned = sum(1 for d in docs for r in d.rotations if r)
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    names = ", ".join(f"{d.path.stem} ({d.pages} p.)" for d in docs)
    return (
        f"Mixed corpus (`scripts/make_documents.py`): {len(docs)} documents, {names};"
        f" pages by kind: {counts}; {listing} of the text pages are contents, lists of"
        f" figures or index pages; {turned} scanned pages lie turned 90, 180 or 270 degrees."
    )

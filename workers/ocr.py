"""Tesseract wrapper: one page image file in, its text and mean word confidence out.

Tesseract runs through `workers.tools.run_tool` like every other program: with a
timeout, its argv logged, its stderr on the `workers.tools.tesseract` logger, failures
raised as `ToolError` types. The image is handed over by path (no re-encoding), and one
run writes both the plain text and the TSV that carries per-word confidences.

Orientation: every page is read with `--psm 1`, automatic layout analysis *with*
orientation and script detection, so a page scanned sideways or upside down is turned
and read in the same run: no pass is read, judged poor and thrown away. Upright pages
read as well as with `--psm 3` (the same error rate on the samples) for about a tenth
more time; pages turned 90, 180 or 270 degrees cost the same as upright ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from importer.languages import parse_languages
from workers.tools import run_tool, tool_environment

TESSERACT = "tesseract"
PAGE_SEGMENTATION = 1  # automatic layout with orientation and script detection


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float | None  # mean over recognised words, 0-100; None when there are none
    words: int


def list_languages(*, timeout: float) -> frozenset[str]:
    """The traineddata Tesseract finds (`eng`, `osd`, `script/Latin`, ...)."""
    out = run_tool([TESSERACT, "--list-langs"], timeout=timeout, env=tesseract_environment())
    listing = (out.stdout or out.stderr).decode("utf-8", "replace").splitlines()
    return frozenset(line.strip() for line in listing[1:] if line.strip())  # after "List of"


def tesseract_environment() -> dict[str, str]:
    """The tools' environment with one OpenMP thread, the one place the limit is set:
    Tesseract's threads collapse throughput when several workers share the cores (210 s
    against 44 s measured)."""
    return tool_environment(OMP_THREAD_LIMIT="1")


def read_page(
    image: Path, *, lang: str, dpi: int, deadline: float, layer: Path | None = None
) -> OcrResult:
    """Read a page image, whichever way up it lies, in one Tesseract run.

    `lang` is a language spec such as "eng+deu"; `LanguageError` if it is not one. The
    run writes `<base>.txt` and `<base>.tsv` next to the image, and must finish by
    `deadline`, a `time.monotonic()` instant. With `layer`, the same run also writes the
    page's text alone as an invisible-text PDF (the image is left out: `textonly_pdf`),
    moved to `layer` for `workers.archive`.
    """
    languages = parse_languages(lang)
    base = image.with_name(f"{image.stem}-ocr")
    argv = [TESSERACT, str(image), str(base), "-l", "+".join(languages)]
    argv += ["--psm", str(PAGE_SEGMENTATION), "--dpi", str(dpi)]
    argv += ["-c", "tessedit_create_tsv=1"]
    argv += ["-c", "textonly_pdf=1", "txt", "pdf"] if layer is not None else ["txt"]
    outputs = [base.with_suffix(suffix) for suffix in (".txt", ".tsv", ".pdf")]
    try:
        run_tool(argv, timeout=deadline - time.monotonic(), env=tesseract_environment())
        text = outputs[0].read_text(encoding="utf-8", errors="replace")
        tsv = outputs[1].read_text(encoding="utf-8", errors="replace")
        if layer is not None:
            outputs[2].replace(layer)
    finally:
        for output in outputs:
            output.unlink(missing_ok=True)
    confidence, words = mean_confidence(tsv)
    return OcrResult(text.replace("\f", "").strip(), confidence, words)


def mean_confidence(tsv: str) -> tuple[float | None, int]:
    """Mean confidence of the recognised words in Tesseract's TSV, and how many there were.

    Rows of level 5 are words; rows with confidence -1 are layout, not words.
    """
    total, words = 0.0, 0
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        try:
            conf = float(cols[10])
        except ValueError:
            continue
        if conf >= 0:
            total += conf
            words += 1
    return (total / words if words else None), words

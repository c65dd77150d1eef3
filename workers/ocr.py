"""Tesseract wrapper: one page image file in, its text and mean word confidence out.

The image is handed to Tesseract by path (no re-encoding through Pillow), and one run
writes both the plain text and the TSV that carries per-word confidences. Failures are
raised as the same `ToolError` types the poppler wrappers use, so the engine treats
every external program alike.

Orientation: every page is read with `--psm 1`, automatic layout analysis *with*
orientation and script detection, so a page scanned sideways or upside down is turned
and read in the same run: no pass is read, judged poor and thrown away. Upright pages
read as well as with `--psm 3` (the same error rate on the samples) for about a tenth
more time; pages turned 90, 180 or 270 degrees cost the same as upright ones.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import ParamSpec, TypeVar

from workers.pdf import ToolError, ToolKilled, ToolTimeout, run_tool

PAGE_SEGMENTATION = 1  # automatic layout with orientation and script detection
ORIENTATION_DATA = "osd"  # the traineddata --psm 1 needs (Debian: tesseract-ocr-osd)

P = ParamSpec("P")
R = TypeVar("R")

_LANGUAGE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z0-9_]+)?$")


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float | None  # mean over recognised words, 0-100; None when there are none
    words: int


def _pytesseract() -> ModuleType:
    """pytesseract, and the Pillow it pulls in, load on first use.

    The engine starts a fresh interpreter per document, and a document whose pages all
    have a text layer never needs them: this saves a fifth of the child's start-up.
    """
    import pytesseract

    return pytesseract


def languages(lang: str) -> list[str]:
    """Split and validate a Tesseract language spec such as "eng+deu"."""
    names = lang.split("+")
    bad = [name for name in names if not _LANGUAGE.match(name)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a Tesseract language name (example: eng+deu)")
    return names


def missing_languages(lang: str, *, timeout: float) -> list[str]:
    """The languages in `lang`, and `osd` (which finds a turned page's orientation), that
    Tesseract has no data for. Without `osd` Tesseract still runs, silently reading a
    turned page as garbage: so it is required like a language."""
    tesseract = _pytesseract().pytesseract.tesseract_cmd
    out = run_tool([tesseract, "--list-langs"], timeout=timeout)
    listing = (out.stdout or out.stderr).decode("utf-8", "replace").splitlines()
    installed = {line.strip() for line in listing[1:]}  # after "List of available ..."
    return [name for name in [*languages(lang), ORIENTATION_DATA] if name not in installed]


def limit_threads() -> None:
    """Tesseract's OpenMP threads collapse throughput when several workers share the cores.

    pytesseract starts Tesseract with this process's environment, so that is where the
    limit has to go.
    """
    os.environ["OMP_THREAD_LIMIT"] = "1"


def read_page(image: Path, *, lang: str, dpi: int, deadline: float) -> OcrResult:
    """Read a page image, whichever way up it lies, in one Tesseract run.

    The run writes `<base>.txt` and `<base>.tsv` next to the image, and must finish by
    `deadline`, a `time.monotonic()` instant.
    """
    timeout = deadline - time.monotonic()
    languages(lang)
    limit_threads()
    base = image.with_name(f"{image.stem}-ocr")
    config = f"--psm {PAGE_SEGMENTATION} --dpi {dpi} -c tessedit_create_tsv=1"
    try:
        _call(
            _pytesseract().pytesseract.run_tesseract,
            input_filename=str(image),
            output_filename_base=str(base),
            extension="txt",
            lang=lang,
            config=config,
            timeout=_positive(timeout),
        )
        text = base.with_suffix(".txt").read_text(encoding="utf-8", errors="replace")
        tsv = base.with_suffix(".tsv").read_text(encoding="utf-8", errors="replace")
    finally:
        base.with_suffix(".txt").unlink(missing_ok=True)
        base.with_suffix(".tsv").unlink(missing_ok=True)
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


def _positive(timeout: float) -> float:
    """pytesseract reads a timeout of 0 as "none": never hand it one."""
    if timeout <= 0:
        raise ToolTimeout("tesseract", "no time left to start it")
    return timeout


def _call(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call into pytesseract, turning its exceptions into `ToolError` types.

    pytesseract signals a timeout with a bare RuntimeError, and every other failure with
    TesseractError, a RuntimeError subclass; hence the order of the handlers.
    """
    pytesseract = _pytesseract()
    try:
        return func(*args, **kwargs)
    except pytesseract.TesseractNotFoundError as e:
        detail = "tesseract is not installed (apt-get install tesseract-ocr)"
        raise ToolError("tesseract", detail) from e
    except pytesseract.TesseractError as e:
        if isinstance(e.status, int) and e.status < 0:
            raise ToolKilled("tesseract", -e.status) from e
        raise ToolError("tesseract", str(e.message).strip()[:300] or f"status {e.status}") from e
    except RuntimeError as e:
        raise ToolTimeout("tesseract", "timed out") from e

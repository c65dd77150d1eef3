"""Tesseract wrapper: one page image file in, its text and mean word confidence out.

The image is handed to Tesseract by path (no re-encoding through Pillow), and one run
writes both the plain text and the TSV that carries per-word confidences. Failures are
raised as the same `ToolError` types the poppler wrappers use, so the engine treats
every external program alike.

Orientation: Tesseract's default layout analysis already reads many pages turned by
90 degrees, but reads pages turned the other way or upside down as confident-looking
garbage with a low mean confidence. Only then is orientation detection (OSD, about as
expensive as a second OCR pass) run, and the page read again the right way up; an
upright page never pays for it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import ParamSpec, TypeVar

from workers.pdf import ToolError, ToolKilled, ToolTimeout, run_tool

log = logging.getLogger(__name__)

PAGE_SEGMENTATION = 3  # fully automatic layout, no OSD: the fast path for upright pages
LOW_CONFIDENCE = 60.0  # below this mean word confidence, check the page's orientation
MIN_WORDS_FOR_OSD = 5  # a near-empty page has no orientation worth detecting

P = ParamSpec("P")
R = TypeVar("R")

_LANGUAGE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z0-9_]+)?$")


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float | None  # mean over recognised words, 0-100; None when there are none
    words: int
    rotated: int = 0  # degrees clockwise the image was turned before this reading


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
    """The languages in `lang` that Tesseract has no data for."""
    tesseract = _pytesseract().pytesseract.tesseract_cmd
    out = run_tool([tesseract, "--list-langs"], timeout=timeout)
    listing = (out.stdout or out.stderr).decode("utf-8", "replace").splitlines()
    installed = {line.strip() for line in listing[1:]}  # after "List of available ..."
    return [name for name in languages(lang) if name not in installed]


def limit_threads() -> None:
    """Tesseract's OpenMP threads collapse throughput when several workers share the cores.

    pytesseract starts Tesseract with this process's environment, so that is where the
    limit has to go.
    """
    os.environ["OMP_THREAD_LIMIT"] = "1"


def read_page(image: Path, *, lang: str, dpi: int, deadline: float) -> OcrResult:
    """Read a page image; if the reading is poor, try again the right way up.

    `deadline` is a `time.monotonic()` instant that every Tesseract run must finish by.
    The second try is a bonus: when it runs out of time, the first reading stands.
    """
    first = recognize(image, lang=lang, dpi=dpi, timeout=deadline - time.monotonic())
    if first.confidence is None or first.confidence >= LOW_CONFIDENCE:
        return first
    if first.words < MIN_WORDS_FOR_OSD:
        return first
    try:
        rotate = orientation(image, dpi=dpi, timeout=deadline - time.monotonic())
        turned = turn(image, rotate) if rotate else None
        if turned is None:
            return first
        try:
            second = recognize(turned, lang=lang, dpi=dpi, timeout=deadline - time.monotonic())
        finally:
            turned.unlink(missing_ok=True)
    except ToolTimeout:
        log.warning("%s: no time left to check its orientation; keeping the first reading", image)
        return first
    log.debug(
        "%s: confidence %.1f upright, %.1f turned %d degrees",
        image,
        first.confidence,
        second.confidence or 0.0,
        rotate,
    )
    if (second.confidence or 0.0) > first.confidence:
        return OcrResult(second.text, second.confidence, second.words, rotate)
    return first


def recognize(image: Path, *, lang: str, dpi: int, timeout: float) -> OcrResult:
    """One Tesseract run writing `<base>.txt` and `<base>.tsv` next to the image."""
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


def orientation(image: Path, *, dpi: int, timeout: float) -> int:
    """Degrees clockwise to turn the image so its text stands upright; 0 when unsure."""
    limit_threads()
    try:
        tess = _pytesseract()
        osd = _call(
            tess.image_to_osd,
            str(image),
            config=f"--dpi {dpi}",
            output_type=tess.Output.DICT,
            timeout=_positive(timeout),
        )
    except (ToolKilled, ToolTimeout):
        raise
    except ToolError as e:
        log.debug("%s: no orientation (%s)", image, e.detail)
        return 0
    return int(osd.get("rotate", 0)) % 360


def turn(image: Path, degrees: int) -> Path | None:
    """A copy of the image turned clockwise, or None when Pillow refuses its size."""
    from PIL import Image

    target = image.with_name(f"{image.stem}-turned{image.suffix}")
    try:
        with Image.open(image) as source:
            source.rotate(-degrees, expand=True).save(target)
    except Image.DecompressionBombError as e:
        log.warning("%s: not turning the page: %s", image, e)
        return None
    return target


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

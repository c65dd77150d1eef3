"""The searchable copy of a document: its own pages, with Tesseract's invisible text on
the pages that were OCRed.

Tesseract writes a text-only PDF of each page in the run that reads it (`workers.ocr`):
one page the size of the image at its dpi, holding nothing but invisible text. Here each
such page becomes a form XObject drawn over the original page, mapped from the image onto
the page as pdftoppm rendered it: the MediaBox, wherever its origin lies, turned by the
page's /Rotate. Tesseract places the words of a page it read turned (`--psm 1`) where they
lie in the image, so those need nothing more.

The original page is left as it is: its content streams are kept byte for byte, wrapped
between a `q` and a `Q` of their own so that what they leave of the graphics state cannot
move the text; only the page's /Contents array and its /Resources gain entries. Pages kept
from their own text layer are copied unchanged.

The scale is uniform per axis and close to 1 (the image's size in points is the page's,
to a pixel), so words keep the widths Tesseract gave them: no letter spacing is invented.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from pypdf import PageObject, PdfReader, PdfWriter
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    FloatObject,
    NameObject,
    PdfObject,
    RectangleObject,
)

LAYER_NAME = "/ImporterOCR"  # the form XObject's name in a page's resources

MAX_DEPTH = 64  # page tree levels searched for an inherited attribute
Matrix = tuple[float, float, float, float, float, float]


class ArchiveFailed(Exception):
    """The searchable copy could not be made (a page pypdf cannot take apart)."""


def placement(media: RectangleObject, rotate: int, layer: RectangleObject) -> Matrix:
    """The matrix that maps the layer page (the rendered image, in points at its dpi) onto
    the page's default user space.

    pdftoppm renders the MediaBox turned clockwise by /Rotate; the image's lower left
    corner is the displayed page's. For each turn, the displayed point (u, v) of a page
    whose MediaBox is x0 y0 + w x h lies at, in user space:

        0:   (x0 + u,     y0 + v)
        90:  (x0 + w - v, y0 + u)
        180: (x0 + w - u, y0 + h - v)
        270: (x0 + v,     y0 + h - u)
    """
    x0, y0 = float(media.left), float(media.bottom)
    w, h = float(media.width), float(media.height)
    turn = rotate % 360
    shown_w, shown_h = (h, w) if turn in (90, 270) else (w, h)
    sx, sy = shown_w / float(layer.width), shown_h / float(layer.height)
    lx, ly = float(layer.left), float(layer.bottom)
    # the displayed point: u = sx * (x - lx), v = sy * (y - ly)
    if turn == 0:
        a, b, c, d, e, f = sx, 0.0, 0.0, sy, x0, y0
    elif turn == 90:
        a, b, c, d, e, f = 0.0, sx, -sy, 0.0, x0 + w, y0
    elif turn == 180:
        a, b, c, d, e, f = -sx, 0.0, 0.0, -sy, x0 + w, y0 + h
    else:
        a, b, c, d, e, f = 0.0, -sx, sy, 0.0, x0, y0 + h
    # fold the layer's own origin in: the point (lx, ly) maps to (e, f)
    return (a, b, c, d, e - a * lx - c * ly, f - b * lx - d * ly)


def write(source: BinaryIO, layers: Mapping[int, Path], out: BinaryIO) -> int:
    """Write the document read from `source` to `out`, with the text-only page of
    `layers[n]` over page n (numbered from 1); the number of pages written.

    Raises ArchiveFailed when pypdf cannot take the document apart; OSError when `out`
    cannot be written.
    """
    try:
        reader = PdfReader(source)
        if reader.is_encrypted:
            reader.decrypt("")  # owner-password only: readable (the engine read it)
        writer = PdfWriter(clone_from=reader)
        for number, layer in sorted(layers.items()):
            _overlay(writer, writer.pages[number - 1], layer)
        writer.write(out)
    except (OSError, MemoryError):  # the disk, the memory limit: not the document's fault
        raise
    except Exception as e:  # pypdf raises many types on damaged files
        raise ArchiveFailed(f"{type(e).__name__}: {e}") from e
    return len(writer.pages)


def _overlay(writer: PdfWriter, page: PageObject, layer: Path) -> None:
    """Draw the text-only page `layer` over `page`, in a form XObject of its own."""
    text_page = PdfReader(layer).pages[0]
    contents = text_page.get("/Contents")
    plain = DecodedStreamObject()
    plain.set_data(b"" if contents is None else _stream_data(contents.get_object()))
    form = plain.flate_encode()
    form[NameObject("/Type")] = NameObject("/XObject")
    form[NameObject("/Subtype")] = NameObject("/Form")
    form[NameObject("/BBox")] = ArrayObject(FloatObject(v) for v in text_page.mediabox)
    resources = text_page.get("/Resources")
    if resources is not None:
        form[NameObject("/Resources")] = resources.get_object().clone(writer)
    form_ref = writer._add_object(form)

    matrix = placement(page.mediabox, page.rotation, text_page.mediabox)
    merged = _dictionary(_inherited(page, "/Resources"))
    names = _dictionary(merged.get("/XObject"))
    name = _free_name(names)
    names[NameObject(name)] = form_ref
    merged[NameObject("/XObject")] = names
    page[NameObject("/Resources")] = merged

    streams: list[PdfObject] = []
    original = page.get("/Contents")
    if original is not None:
        target = original.get_object()
        streams = list(target) if isinstance(target, ArrayObject) else [original]
    cm = " ".join(_number(v) for v in matrix)
    page[NameObject("/Contents")] = ArrayObject(
        [
            writer._add_object(_stream(b"q\n")),
            *streams,
            writer._add_object(_stream(f"\nQ q {cm} cm {name} Do Q\n".encode())),
        ]
    )


def _stream_data(obj: PdfObject) -> bytes:
    if isinstance(obj, ArrayObject):  # a page's contents may be an array of streams
        return b"\n".join(_stream_data(item.get_object()) for item in obj)
    data: bytes = obj.get_data()  # type: ignore[attr-defined]
    return data


def _stream(data: bytes) -> DecodedStreamObject:
    stream = DecodedStreamObject()
    stream.set_data(data)
    return stream


def _dictionary(obj: PdfObject | None) -> DictionaryObject:
    """A shallow copy of a dictionary (the page's own, not one it may share), or a new
    one; ArchiveFailed when the object is something else."""
    if obj is None:
        return DictionaryObject()
    target = obj.get_object()
    if not isinstance(target, DictionaryObject):
        raise ArchiveFailed(f"a page's resources are a {type(target).__name__}, not a dictionary")
    return DictionaryObject(target)


def _inherited(page: PageObject, key: str) -> PdfObject | None:
    """A page attribute, from the page or the nearest page tree node that holds it."""
    node: PdfObject | None = page
    for _ in range(MAX_DEPTH):  # a page tree that loops ends here
        target = None if node is None else node.get_object()
        if not isinstance(target, DictionaryObject):
            return None
        if key in target:
            return target[key]
        node = target.get("/Parent")
    return None


def _free_name(names: DictionaryObject) -> str:
    """The layer's name, unique among the page's own XObjects."""
    name, n = LAYER_NAME, 1
    while name in names:
        n += 1
        name = f"{LAYER_NAME}{n}"
    return name


def _number(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text

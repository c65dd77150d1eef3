"""Tesseract language specs such as "eng+deu": the one rule they are checked by, and the
Debian package that installs each language.

`submit`, `run` and `doctor` check `--lang` with it, and the worker checks the spec a
job carries before it reaches Tesseract's command line. A spec is one to eight names
joined by '+', at most 64 characters (the database column). A name is a traineddata
file's name: a letter, then letters, digits or '_' (`eng`, `chi_sim`, `deu_latf`), up to
32 characters; or a script model, `script/` and such a name (`script/Latin`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from importer.errors import BadInput

MAX_SPEC = 64  # batches.lang is a String(64)
MAX_NAMES = 8
ORIENTATION = "osd"  # the traineddata `--psm 1` needs to turn a page; required like a language

_NAME = re.compile(r"(?:script/)?[A-Za-z][A-Za-z0-9_]{0,31}", re.ASCII)

# Script models live in Debian packages named by their ISO 15924 code.
_SCRIPT_CODES = {
    "Arabic": "arab",
    "Armenian": "armn",
    "Bengali": "beng",
    "Canadian_Aboriginal": "cans",
    "Cherokee": "cher",
    "Cyrillic": "cyrl",
    "Devanagari": "deva",
    "Ethiopic": "ethi",
    "Fraktur": "frak",
    "Georgian": "geor",
    "Greek": "grek",
    "Gujarati": "gujr",
    "Gurmukhi": "guru",
    "Hangul": "hang",
    "HanS": "hans",
    "HanT": "hant",
    "Hebrew": "hebr",
    "Japanese": "jpan",
    "Kannada": "knda",
    "Khmer": "khmr",
    "Lao": "laoo",
    "Latin": "latn",
    "Malayalam": "mlym",
    "Myanmar": "mymr",
    "Oriya": "orya",
    "Sinhala": "sinh",
    "Syriac": "syrc",
    "Tamil": "taml",
    "Telugu": "telu",
    "Thaana": "thaa",
    "Thai": "thai",
    "Tibetan": "tibt",
    "Vietnamese": "viet",
}


class LanguageError(BadInput):
    """A language spec that is not Tesseract language names joined by '+'."""


def parse_languages(spec: str) -> tuple[str, ...]:
    """The names in `spec`, in order; `LanguageError` saying which part is wrong."""
    names = spec.split("+")
    for name in names:
        if not _NAME.fullmatch(name):
            raise LanguageError(f"{name!r} is not a Tesseract language name{_EXAMPLE}")
    if len(spec) > MAX_SPEC or len(names) > MAX_NAMES:
        raise LanguageError(
            f"{spec[:80]!r} is too long: at most {MAX_NAMES} names, {MAX_SPEC} characters{_EXAMPLE}"
        )
    if len(set(names)) < len(names):
        raise LanguageError(f"{spec!r} names a language twice{_EXAMPLE}")
    return tuple(names)


_EXAMPLE = " (give Tesseract language codes joined by '+', e.g. eng+deu)"


def check_lang(spec: str, option: str = "--lang") -> str:
    """`spec` unchanged if it is a language spec; else `LanguageError` naming the option."""
    try:
        parse_languages(spec)
    except LanguageError as e:
        raise LanguageError(f"{option} {spec[:80]!r}: {e.message}") from e
    return spec


def missing_languages(names: Iterable[str], installed: Iterable[str]) -> list[str]:
    """The `names`, and `osd`, that are not among the `installed` traineddata.

    Without `osd` Tesseract still runs, silently reading a turned page as garbage: so
    it is required like a language."""
    have = set(installed)
    wanted = [*names, ORIENTATION]
    return [name for name in dict.fromkeys(wanted) if name not in have]


def debian_package(name: str) -> str:
    """The Debian package holding a traineddata: `tesseract-ocr-chi-sim` for chi_sim,
    `tesseract-ocr-script-latn` for script/Latin."""
    if name.startswith("script/"):
        script = name.removeprefix("script/")
        script, vertical = (script[:-5], "-vert") if script.endswith("_vert") else (script, "")
        return f"tesseract-ocr-script-{_SCRIPT_CODES.get(script, script.lower())}{vertical}"
    return "tesseract-ocr-" + name.lower().replace("_", "-")


def install_command(names: Iterable[str]) -> str:
    """The command that installs these languages: `apt-get install tesseract-ocr-deu ...`."""
    return "apt-get install " + " ".join(dict.fromkeys(debian_package(n) for n in names))

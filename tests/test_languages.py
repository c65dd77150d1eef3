"""The one language rule: what `--lang` (submit, run, doctor) and a job's spec may hold."""

from __future__ import annotations

import pytest

from importer.errors import BadInput
from importer.languages import (
    LanguageError,
    check_lang,
    debian_package,
    install_command,
    missing_languages,
    parse_languages,
)


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("eng", ("eng",)),
        ("eng+deu", ("eng", "deu")),
        ("chi_sim+chi_sim_vert", ("chi_sim", "chi_sim_vert")),
        ("script/Latin", ("script/Latin",)),
        ("eng+script/HanS_vert", ("eng", "script/HanS_vert")),
        ("a" * 32, ("a" * 32,)),
        ("+".join(["eng", "deu", "fra", "ita", "spa", "por", "nld", "swe"]), None),
    ],
)
def test_accepted(spec: str, names: tuple[str, ...] | None) -> None:
    assert parse_languages(spec) == (names or tuple(spec.split("+")))
    assert check_lang(spec) == spec


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "eng+",
        "+eng",
        "eng++deu",
        "eng deu",
        "eng,deu",
        "eng --user-words /etc/passwd",
        "-l",
        "1eng",
        "_eng",
        "../eng",
        "/usr/share/eng",
        "fonts/eng",  # only script models live in a subdirectory
        "script/",
        "script/../eng",
        "script/Latin/x",
        "eng\n",
        "ëng",  # letters outside ASCII are no traineddata name
        "a" * 33,
        "eng+eng",
        "+".join(["eng", "deu", "fra", "ita", "spa", "por", "nld", "swe", "fin"]),
        "+".join(c * 10 for c in "abcdefg"),  # 7 names, but 76 characters
    ],
)
def test_refused(spec: str) -> None:
    with pytest.raises(LanguageError):
        parse_languages(spec)
    with pytest.raises(BadInput, match="^--lang .*e.g. eng\\+deu"):
        check_lang(spec)


def test_refusal_names_the_part() -> None:
    with pytest.raises(LanguageError, match="'--user-words' is not a Tesseract language name"):
        parse_languages("eng+--user-words")


def test_missing_always_includes_orientation_data() -> None:
    assert missing_languages(("eng", "deu"), {"eng", "osd"}) == ["deu"]
    assert missing_languages(("eng",), {"eng"}) == ["osd"]
    assert missing_languages(("osd",), set()) == ["osd"]


def test_debian_packages() -> None:
    assert debian_package("deu") == "tesseract-ocr-deu"
    assert debian_package("osd") == "tesseract-ocr-osd"
    assert debian_package("chi_sim_vert") == "tesseract-ocr-chi-sim-vert"
    assert debian_package("script/Latin") == "tesseract-ocr-script-latn"
    assert debian_package("script/HanS_vert") == "tesseract-ocr-script-hans-vert"
    assert install_command(["deu", "osd"]) == "apt-get install tesseract-ocr-deu tesseract-ocr-osd"

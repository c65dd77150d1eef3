"""How close a contender's text is to what the pages say: speed must not cost accuracy."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from bench_lib.corpus import Doc

# "The same accuracy": at most this many times the baseline's CER, or this much above it,
# whichever allows more (a baseline near zero would otherwise allow no error at all).
CER_FACTOR = 1.25
CER_MARGIN = 0.002

PageKey = tuple[Path, int]


def normalize(text: str) -> str:
    """Layout differences (line breaks, form feeds, runs of spaces) are not errors."""
    return " ".join(text.split())


def cer(texts: Mapping[Hashable, str], expected: Mapping[Hashable, str]) -> float:
    """Character error rate over all documents: edits needed / characters expected."""
    edits = sum(
        Levenshtein.distance(normalize(texts.get(key, "")), normalize(want))
        for key, want in expected.items()
    )
    total = sum(len(normalize(want)) for want in expected.values())
    return edits / total if total else 0.0


def similarity(texts: Mapping[Path, str], reference: Mapping[Path, str]) -> float:
    """1 - the character error rate of `texts` against `reference`, floored at 0."""
    return max(0.0, 1.0 - cer(texts, reference))


def same_accuracy(ours: float, baseline: float) -> bool:
    """Whether a CER of `ours` counts as the baseline's accuracy (twice its errors does not)."""
    return ours <= max(baseline * CER_FACTOR, baseline + CER_MARGIN)


def tolerance() -> str:
    points = f"{CER_MARGIN * 100:g} percentage points"
    return f"CER ≤ max({CER_FACTOR:g} × the baseline's, the baseline's + {points})"


def by_page(texts: Mapping[Path, str], docs: Sequence[Doc]) -> dict[PageKey, str]:
    """Each document's text split at its form feeds, keyed by (path, page number)."""
    pages: dict[PageKey, str] = {}
    for doc in docs:
        for number, text in enumerate(texts.get(doc.path, "").split("\f"), 1):
            pages[(doc.path, number)] = text
    return pages


def expected_pages(
    docs: Sequence[Doc], keep: Callable[[Doc, int], bool] = lambda doc, number: True
) -> dict[PageKey, str]:
    """The expected text of the pages `keep` picks, keyed like `by_page`."""
    return {
        (doc.path, number): text
        for doc in docs
        for number, text in enumerate(doc.page_texts(), 1)
        if keep(doc, number)
    }
